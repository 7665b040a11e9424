"""A nuclei detector: the segmenter network plus what it needs to run on a slide, and its files.

A detector directory holds ``detector.safetensors`` (the weights) and ``detector.json``: its
classes (a taxonomy: "nucleus" alone for a detector trained on unclassified outlines), the
resolution it works at (``mpp``), the U-Net widths, the h-maxima height of its watershed, its speck
filter (``min_area``: found objects smaller than this many px are dropped, see calibration.py; 0
in files from before it) and what it was trained on (by name, never a machine path).

Prediction on an image gives instances, a class per instance (majority of the semantic head) and
a confidence per instance: the mean foreground probability (1 - P(background)) over its pixels,
in (0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import CosynthError
from ..taxonomy import Taxonomy
from .segmenter import SegmenterNet

WEIGHTS = "detector.safetensors"
CONFIG = "detector.json"
FORMAT_VERSION = 1
MAX_MIN_AREA = 10_000  # px: a speck filter this large would drop every nucleus


@dataclass(frozen=True)
class Detections:
    """What a detector found in one image.

    instances : (H, W) int32, ids 1..N (0 background).
    classes : (N,) int64 class ids in the detector's taxonomy (1..K).
    confidence : (N,) float32 in (0, 1].
    """

    instances: np.ndarray
    classes: np.ndarray
    confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)


@dataclass
class Detector:
    """A trained segmenter network with its classes, resolution, watershed height and speck filter."""

    net: SegmenterNet
    taxonomy: Taxonomy
    mpp: float
    h: float = 0.1
    widths: tuple[int, ...] = (16, 32, 64, 128)
    info: dict = field(default_factory=dict)  # training data (by name), steps, scores
    min_area: int = 0  # px at ``mpp``: smaller objects not on the image border are specks

    @property
    def multiple(self) -> int:
        """Image sides the network takes are multiples of this (its pooling levels)."""
        return 2 ** (len(self.widths) - 1)

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> Detections:
        """Detect the nuclei of an (H, W, 3) uint8 RGB image at the detector's resolution.

        Any size: the image is padded (reflected) to the network's multiple and cropped back.
        """
        from ..instances import separate_marker_free
        from .calibration import drop_specks

        h, w = image.shape[:2]
        m = self.multiple
        ph, pw = -h % m, -w % m
        padded = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else image
        x = torch.from_numpy(padded.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        self.net.eval()
        logits, dist = self.net(x)
        prob = torch.softmax(logits[0, :, :h, :w], dim=0)
        semantic = prob.argmax(0).numpy().astype(np.int64)
        instances, classes = separate_marker_free(dist[0, 0, :h, :w].numpy(), semantic, h=self.h)
        if self.min_area > 0:
            instances, classes = drop_specks(instances, np.asarray(classes), self.min_area)
        n = len(classes)
        foreground = (1 - prob[0]).numpy().astype(np.float64)
        sums = np.bincount(instances.ravel(), weights=foreground.ravel(), minlength=n + 1)[1:]
        counts = np.maximum(np.bincount(instances.ravel(), minlength=n + 1)[1:], 1)
        confidence = np.clip(sums / counts, 1e-6, 1.0).astype(np.float32)
        return Detections(instances.astype(np.int32), np.asarray(classes, dtype=np.int64), confidence)

    def save(self, directory: str | Path) -> Path:
        """Write the detector's two files into ``directory`` (created); return it."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float32).contiguous() for k, v in self.net.state_dict().items()
                 if v.dtype.is_floating_point}
        with atomic_path(out / WEIGHTS) as tmp:
            save_file(state, str(tmp))
        meta = {"format_version": FORMAT_VERSION, "kind": "wsi-cosynth nuclei detector", "mpp": self.mpp, "h": self.h,
                "min_area": self.min_area, "widths": list(self.widths), "classes": list(self.taxonomy.names),
                "taxonomy": self.taxonomy.key, "info": self.info}
        with atomic_path(out / CONFIG) as tmp:
            Path(tmp).write_text(json.dumps(meta, indent=1))
        return out


def load_detector(directory: str | Path) -> Detector:
    """Load a detector directory (see the module docstring); CosynthError naming the problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise CosynthError(f"detector {path}: not a detector directory (needs {CONFIG} and {WEIGHTS})")
    try:
        meta = json.loads((path / CONFIG).read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        widths = tuple(int(v) for v in meta["widths"])
        names = [str(n) for n in meta["classes"]]
        mpp, h, min_area = float(meta["mpp"]), float(meta.get("h", 0.1)), int(meta.get("min_area", 0))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CosynthError(f"detector {path / CONFIG}: unreadable ({exc.__class__.__name__}: {exc})") from None
    # Bounds that no real detector leaves and that keep a damaged file from asking for a network
    # of absurd size or a slide read at an absurd resolution.
    if not (1 <= len(names) <= 64 and 1 <= len(widths) <= 6 and all(1 <= w <= 1024 for w in widths)
            and 0.05 <= mpp <= 20 and 0 < h <= 1 and 0 <= min_area <= MAX_MIN_AREA):
        raise CosynthError(f"detector {path / CONFIG}: needs 1-64 classes, 1-6 widths in 1..1024, mpp in "
                           f"[0.05, 20], h in (0, 1] and min_area in 0..{MAX_MIN_AREA} (got {len(names)} classes, "
                           f"widths {list(widths)[:8]}, mpp {mpp}, h {h}, min_area {min_area})")
    net = SegmenterNet(len(names), widths)
    try:
        state = load_file(str(path / WEIGHTS))
        missing, unexpected = net.load_state_dict(state, strict=False)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise CosynthError(f"detector {path / WEIGHTS}: unreadable weights ({exc})") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CosynthError(f"detector {path / WEIGHTS}: weights do not fit its {CONFIG} "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    taxonomy = Taxonomy.from_names(str(meta.get("taxonomy", "detector")), names)
    info = meta.get("info")
    return Detector(net.eval(), taxonomy, mpp, h, widths, info if isinstance(info, dict) else {}, min_area)
