"""Training batches built on the training device: the prepared tiles live there as tensors, and
one gather per map cuts every example's crop and D4 symmetry at once.

:class:`TileDataset` builds each example in Python on the CPU (crop, rotation, flip, conversion):
fine for CPU training at batch 8, but at the batch sizes a GPU wants the CPU would feed it far
slower than it trains. :class:`DeviceTileDataset` draws the same examples (tile uniform with
replacement, uniformly or by the dataset's weights, crop offset uniform, symmetry uniform in
0..7, the same prompt and text-drop rule),
though not the same random sequence, and returns a :class:`~.dataset.Batch` whose tensors are
already on the device (the training loop's ``.to(device)`` is then a no-op).
"""

from __future__ import annotations

import numpy as np
import torch

from ..diffusion.joint import JointState
from ..models.text import build_prompt
from .dataset import Batch, TileDataset, d4


def d4_index_maps(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(8, size, size) row and column source indices: ``d4(a, k)[i, j] == a[rows[k, i, j], cols[k, i, j]]``
    for any ``size`` x ``size`` array ``a`` (made with :func:`~.dataset.d4` itself)."""
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return (np.stack([np.ascontiguousarray(d4(r, k)) for k in range(8)]),
            np.stack([np.ascontiguousarray(d4(c, k)) for k in range(8)]))


class DeviceTileDataset:
    """The tiles of a :class:`TileDataset` held on ``device``; same interface for the training loop
    (``taxonomy``, ``len``, ``batch``, ``summary``)."""

    def __init__(self, dataset: TileDataset, device: str | torch.device) -> None:
        self.base = dataset
        self.taxonomy = dataset.taxonomy
        self.device = torch.device(device)
        self.tile_size = s = dataset.tile_size
        tiles = dataset.tiles
        self.shapes = np.array([t.semantic.shape for t in tiles], dtype=np.int64)  # (N, 2) h, w
        h, w = (int(v) for v in self.shapes.max(axis=0))
        n = len(tiles)
        # Tiles of other sizes are padded to the largest; crops never reach the padding.
        image = np.zeros((n, h, w, 3), np.uint8)
        label = np.zeros((n, h, w), np.uint8 if self.taxonomy.n_classes < 256 else np.int64)
        dist = np.zeros((n, h, w), np.float32)
        points = np.zeros((n, h, w), label.dtype)
        self.point_rc: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for i, t in enumerate(tiles):
            th, tw = t.semantic.shape
            image[i, :th, :tw] = t.image
            label[i, :th, :tw] = t.semantic
            dist[i, :th, :tw] = t.distance
            points[i, :th, :tw] = t.points
            rr, cc = np.nonzero(t.points)
            self.point_rc.append((rr, cc, t.points[rr, cc]))
        self.image = torch.from_numpy(image).to(self.device)
        self.label = torch.from_numpy(label).to(self.device)
        self.distance = torch.from_numpy(dist).to(self.device)
        self.points = torch.from_numpy(points).to(self.device)
        rows, cols = d4_index_maps(s)
        self.rows = torch.from_numpy(rows).to(self.device)
        self.cols = torch.from_numpy(cols).to(self.device)

    def __len__(self) -> int:
        return len(self.base)

    def summary(self) -> dict:
        return self.base.summary()

    def views(self, idx: np.ndarray, r0: np.ndarray, c0: np.ndarray, k: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Crops at (r0, c0) of tiles ``idx`` under symmetries ``k``, as stored: image (B, S, S, 3)
        uint8, semantic, distance and point maps (B, S, S)."""
        dev = self.device
        ii = torch.as_tensor(idx, device=dev)[:, None, None]
        kk = torch.as_tensor(k, device=dev)
        rr = self.rows[kk] + torch.as_tensor(r0, device=dev)[:, None, None]
        cc = self.cols[kk] + torch.as_tensor(c0, device=dev)[:, None, None]
        return self.image[ii, rr, cc], self.label[ii, rr, cc], self.distance[ii, rr, cc], self.points[ii, rr, cc]

    def batch(self, batch_size: int, rng: np.random.Generator) -> Batch:
        s, base = self.tile_size, self.base
        idx = base.draw_tiles(batch_size, rng)
        h, w = self.shapes[idx, 0], self.shapes[idx, 1]
        if base.augment:
            r0 = (rng.random(batch_size) * (h - s + 1)).astype(np.int64)
            c0 = (rng.random(batch_size) * (w - s + 1)).astype(np.int64)
            k = rng.integers(0, 8, size=batch_size)
        else:
            r0 = c0 = k = np.zeros(batch_size, np.int64)
        image, label, dist, points = self.views(idx, r0, c0, k)
        prompts, keep = [], []
        for i, r, c in zip(idx, r0, c0):
            rr, cc, cls = self.point_rc[i]
            inside = (rr >= r) & (rr < r + s) & (cc >= c) & (cc < c + s)
            names = [base.class_word(int(v)) for v in np.unique(cls[inside])]
            g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
            prompts.append(build_prompt(base.tissues[i], names, g))
            keep.append(bool(rng.random() >= base.text_drop_prob))
        x0 = JointState(image.permute(0, 3, 1, 2).float() / 127.5 - 1, dist[:, None] * 2 - 1, label.long())
        return Batch(x0, points.long(), prompts, torch.tensor(keep))
