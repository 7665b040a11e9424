"""The nuclei segmenter network: the detector's (wsi_cosynth/detection/model.py) and the downstream
benchmark's reference segmenter (does a training set help?).

The network is a plain U-Net with two heads, as the HoVer-Net family splits the task:

- a semantic head, (K + 1) logits per pixel (0 = background, 1..K the taxonomy's classes),
  trained with cross-entropy plus a soft Dice on the foreground;
- a distance head, the per-nucleus distance map of :func:`wsi_cosynth.layouts.distance_map`
  (1 at a nucleus centre, 0 at its border), trained with mean squared error.

Instances come from a marker-controlled watershed of the predicted distance map with h-maxima
markers (:func:`wsi_cosynth.instances.separate_marker_free`): at test time there are no points.

Everything a run depends on sits in :class:`SegmenterConfig` (sizes, optimiser, step budget,
crop size, augmentation, seed), so that two runs that differ only in their training tiles are
directly comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CosynthError
from ..records import LabelledTile
from ..training.dataset import d4


@dataclass(frozen=True)
class SegmenterConfig:
    """Network size, optimiser, step budget and augmentation of one segmenter run.

    widths : channels at each U-Net level (full resolution first).
    steps : optimizer steps (the fixed budget every arm gets).
    crop : side of the random square training crops (tiles are scored whole).
    colour_jitter : maximum relative change of brightness, contrast and saturation.
    h : h-maxima height for the watershed markers on the predicted distance map.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128)
    steps: int = 1200
    batch_size: int = 8
    crop: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    colour_jitter: float = 0.1
    h: float = 0.1
    seed: int = 0
    threads: int | None = 2

    def to_dict(self) -> dict:
        return asdict(self)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class SegmenterNet(nn.Module):
    """(B, 3, H, W) float image in [-1, 1] -> (B, K + 1, H, W) class logits and (B, 1, H, W) distance."""

    def __init__(self, n_classes: int, widths: Sequence[int]) -> None:
        super().__init__()
        widths = tuple(widths)
        self.down = nn.ModuleList()
        c = 3
        for w in widths:
            self.down.append(_block(c, w))
            c = w
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.merge.append(_block(2 * w, w))
            c = w
        self.semantic = nn.Conv2d(c, n_classes + 1, 1)
        self.distance = nn.Conv2d(c, 1, 1)
        self.levels = len(widths)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.semantic(x), torch.sigmoid(self.distance(x))


@dataclass(frozen=True)
class _Prepared:
    image: np.ndarray  # (H, W, 3) uint8
    semantic: np.ndarray  # (H, W) int64
    distance: np.ndarray  # (H, W) float32 in [0, 1]


def _prepare(tiles: Sequence[LabelledTile]) -> list[_Prepared]:
    from ..layouts import distance_map

    out = []
    for t in tiles:
        if min(t.size) < 8:
            raise CosynthError(f"tile {t.provenance.name!r} is too small to train on ({t.size})")
        out.append(_Prepared(t.image, t.semantic(), np.asarray(distance_map(t.instances), np.float32)))
    return out


def _batch(data: Sequence[_Prepared], config: SegmenterConfig, rng: np.random.Generator,
           weights: np.ndarray | None = None):
    """One batch of random crops with D4 symmetries and colour jitter, all drawn from ``rng``
    (tiles drawn uniformly, or with probabilities ``weights``)."""
    images, sems, dists = [], [], []
    for _ in range(config.batch_size):
        p = data[int(rng.integers(0, len(data))) if weights is None else int(rng.choice(len(data), p=weights))]
        h, w = p.semantic.shape
        s = min(config.crop, h, w)
        r0, c0, k = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1)), int(rng.integers(0, 8))
        img = d4(p.image[r0:r0 + s, c0:c0 + s], k).astype(np.float32) / 255.0
        j = config.colour_jitter
        bright, contrast, sat = (1 + rng.uniform(-j, j, 3)) if j > 0 else (1.0, 1.0, 1.0)
        grey = img.mean(axis=2, keepdims=True)
        img = grey + (img - grey) * sat
        img = (img - img.mean()) * contrast + img.mean()
        img = np.clip(img * bright, 0.0, 1.0).astype(np.float32)
        images.append(img)
        sems.append(d4(p.semantic[r0:r0 + s, c0:c0 + s], k))
        dists.append(d4(p.distance[r0:r0 + s, c0:c0 + s], k))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous() * 2 - 1
    y_sem = torch.from_numpy(np.ascontiguousarray(np.stack(sems)))
    y_dist = torch.from_numpy(np.ascontiguousarray(np.stack(dists)))[:, None]
    return x, y_sem, y_dist


def _loss(logits: torch.Tensor, dist: torch.Tensor, y_sem: torch.Tensor, y_dist: torch.Tensor) -> torch.Tensor:
    ce = F.cross_entropy(logits, y_sem)
    fg_p = 1 - torch.softmax(logits, dim=1)[:, 0]
    fg_t = (y_sem > 0).float()
    soft_dice = 1 - (2 * (fg_p * fg_t).sum() + 1) / (fg_p.sum() + fg_t.sum() + 1)
    return ce + soft_dice + 2.0 * F.mse_loss(dist, y_dist)


def _drawing_probabilities(weights: Sequence[float] | None, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    p = np.asarray(weights, dtype=np.float64)
    if p.shape != (n,) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise CosynthError(f"segmenter tile weights must be {n} finite non-negative numbers, not all 0")
    return p / p.sum()


def train_segmenter(tiles: Sequence[LabelledTile], n_classes: int, config: SegmenterConfig, *,
                    weights: Sequence[float] | None = None,
                    finish: tuple[int, Sequence[float]] | None = None) -> SegmenterNet:
    """Train a fresh :class:`SegmenterNet` on ``tiles`` for ``config.steps`` steps.

    ``weights``: each tile's drawing weight (e.g. balancing sources; default uniform).
    ``finish``: (steps, weights): the last ``steps`` steps draw tiles by these weights instead,
    e.g. real tiles only, so that a detector that learnt from real + synthetic tiles ends on the
    look of real ones. The initial weights, the crops and the augmentation depend only on
    ``config.seed`` (and the tiles), never on the caller's global RNG state.
    """
    if not tiles:
        raise CosynthError("no tiles to train the segmenter on")
    data = _prepare(tiles)
    p = _drawing_probabilities(weights, len(data))
    finish_from, p_finish = config.steps, None
    if finish is not None:
        finish_steps, finish_weights = finish
        if not 0 <= int(finish_steps) <= config.steps:
            raise CosynthError(f"segmenter finishing steps must be 0..{config.steps}, not {finish_steps}")
        finish_from, p_finish = config.steps - int(finish_steps), _drawing_probabilities(finish_weights, len(data))
    if config.threads:
        torch.set_num_threads(config.threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = SegmenterNet(n_classes, config.widths)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    rng = np.random.default_rng(config.seed)
    net.train()
    for step in range(config.steps):
        x, y_sem, y_dist = _batch(data, config, rng, p if step < finish_from else p_finish)
        logits, dist = net(x)
        loss = _loss(logits, dist, y_sem, y_dist)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.no_grad()
def predict_instances(net: SegmenterNet, image: np.ndarray, *, h: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image -> (instances (H, W) int32 ids 1..N, classes (N,) int64).

    H and W must be multiples of 2^(levels - 1); instances by h-maxima watershed of the
    predicted distance inside the predicted foreground, each with its majority class.
    """
    from ..instances import separate_marker_free

    step = 2 ** (net.levels - 1)
    if image.shape[0] % step or image.shape[1] % step:
        raise CosynthError(f"image {image.shape[:2]} is not a multiple of {step} px, as the segmenter needs")
    x = torch.from_numpy(image.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    logits, dist = net(x)
    semantic = logits[0].argmax(0).numpy().astype(np.int64)
    return separate_marker_free(dist[0, 0].numpy(), semantic, h=h)
