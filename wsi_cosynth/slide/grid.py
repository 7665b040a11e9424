"""Tile grids over a slide: positions in level-0 pixels, tissue fraction per tile. Pure functions.

A tile is ``tile_size`` x ``tile_size`` output pixels at ``target_mpp``, i.e. a level-0 square
of side ``tile_size * scale`` with ``scale = target_mpp / slide_mpp``. Tiles start at level-0
(0, 0) and step by ``stride * scale``; only tiles lying wholly inside the slide are kept (with
``pad=True`` the grid also covers the slide's right and bottom edges, and a slide smaller than a
tile gives one tile: the reader pads what lies outside), and of those only the ones whose tissue
fraction (of the part inside the slide) reaches ``min_tissue``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CosynthError
from .resolution import scale_to_level0


@dataclass(frozen=True)
class TileGrid:
    """Tile positions, one row per tile, row-major over the slide.

    Attributes
    ----------
    x_level0, y_level0 : (N,) int64, level-0 pixel of each tile's top-left corner.
    col, row : (N,) int64, grid indices (x step, y step).
    tissue_fraction : (N,) float64 in [0, 1].
    tile_size : output tile side in pixels; ``stride`` : output-pixel step.
    scale : level-0 pixels per output pixel; ``target_mpp`` : microns per output pixel.
    """

    x_level0: np.ndarray
    y_level0: np.ndarray
    col: np.ndarray
    row: np.ndarray
    tissue_fraction: np.ndarray
    tile_size: int
    stride: int
    scale: float
    target_mpp: float

    def __len__(self) -> int:
        return len(self.x_level0)

    @property
    def extent_level0(self) -> float:
        """Tile side in level-0 pixels."""
        return self.tile_size * self.scale

    def boxes_level0(self) -> np.ndarray:
        """(N, 4) float64 (x0, y0, x1, y1) in level-0 pixels."""
        e = self.extent_level0
        x, y = self.x_level0.astype(np.float64), self.y_level0.astype(np.float64)
        return np.stack([x, y, x + e, y + e], axis=1)


def tissue_fractions(boxes_level0: np.ndarray, mask: np.ndarray, mask_scale: float) -> np.ndarray:
    """Share of tissue pixels of ``mask`` under each box.

    Parameters
    ----------
    boxes_level0 : (N, 4) (x0, y0, x1, y1) in level-0 pixels.
    mask : (H, W) bool tissue mask; mask pixel (r, c) covers level-0 [c * mask_scale, (c+1) * mask_scale).
    mask_scale : level-0 pixels per mask pixel.

    Returns
    -------
    (N,) float64 in [0, 1]; boxes are snapped to whole mask pixels.
    """
    m = np.asarray(mask, dtype=bool)
    boxes = np.asarray(boxes_level0, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.float64)
    # Summed-area table with a zero row and column in front: sum over [r0, r1) x [c0, c1).
    sat = np.zeros((m.shape[0] + 1, m.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(m, axis=0), axis=1)
    h, w = m.shape
    c0 = np.clip(np.round(boxes[:, 0] / mask_scale).astype(np.int64), 0, w)
    r0 = np.clip(np.round(boxes[:, 1] / mask_scale).astype(np.int64), 0, h)
    c1 = np.clip(np.maximum(np.round(boxes[:, 2] / mask_scale).astype(np.int64), c0 + 1), 0, w)
    r1 = np.clip(np.maximum(np.round(boxes[:, 3] / mask_scale).astype(np.int64), r0 + 1), 0, h)
    total = sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0]
    area = np.maximum((r1 - r0) * (c1 - c0), 1)
    return total / area


def tile_grid(
    slide_size_level0: tuple[int, int],
    slide_mpp: float,
    *,
    target_mpp: float = 0.5,
    tile_size: int = 256,
    stride: int | None = None,
    min_tissue: float = 0.5,
    tissue_mask: np.ndarray | None = None,
    mask_scale: float | None = None,
    pad: bool = False,
) -> TileGrid:
    """Tiles over a slide, filtered by tissue fraction.

    Parameters
    ----------
    slide_size_level0 : (width, height) of level 0 in pixels.
    slide_mpp : microns per level-0 pixel.
    target_mpp : microns per output pixel.
    tile_size : output tile side (pixels); ``stride`` : output-pixel step (default ``tile_size``).
    min_tissue : keep tiles with tissue fraction >= this (0 keeps every tile).
    tissue_mask, mask_scale : (H, W) bool mask and its level-0 pixels per mask pixel; without a
        mask every tile counts as all tissue.
    pad : also keep tiles reaching past the right/bottom edge, so the grid covers the whole slide.

    Returns
    -------
    TileGrid (possibly empty).
    """
    if int(tile_size) <= 0:
        raise CosynthError(f"tile size must be a positive number of pixels, got {tile_size!r}")
    step = int(stride) if stride is not None else int(tile_size)
    if step <= 0:
        raise CosynthError(f"stride must be a positive number of pixels, got {stride!r}")
    if not 0.0 <= float(min_tissue) <= 1.0:
        raise CosynthError(f"min tissue fraction must be in [0, 1], got {min_tissue!r}")
    scale = scale_to_level0(target_mpp, slide_mpp)
    extent = tile_size * scale
    w0, h0 = slide_size_level0
    nx, ny = (_tiles_across(n, extent, step * scale, pad) for n in (w0, h0))
    row, col = np.meshgrid(np.arange(ny, dtype=np.int64), np.arange(nx, dtype=np.int64), indexing="ij")
    row, col = row.ravel(), col.ravel()
    # Floor, not round: rounding could push the last tile up to half a pixel past the slide edge.
    x = np.floor(col * step * scale + 1e-9).astype(np.int64)
    y = np.floor(row * step * scale + 1e-9).astype(np.int64)
    if tissue_mask is not None:
        if mask_scale is None:
            raise CosynthError("tile_grid: mask_scale (level-0 pixels per mask pixel) is needed with a tissue mask")
        e = extent
        boxes = np.stack([x, y, x + e, y + e], axis=1).astype(np.float64)
        frac = tissue_fractions(boxes, tissue_mask, mask_scale)
    else:
        frac = np.ones(len(x), dtype=np.float64)
    keep = frac >= float(min_tissue) - 1e-12
    return TileGrid(
        x_level0=x[keep], y_level0=y[keep], col=col[keep], row=row[keep], tissue_fraction=frac[keep],
        tile_size=int(tile_size), stride=step, scale=scale, target_mpp=float(target_mpp),
    )


def _tiles_across(side_level0: float, extent: float, step_level0: float, pad: bool) -> int:
    """Tiles along one side: wholly inside, or (``pad``) until the side is covered."""
    if not pad:
        return int(np.floor((side_level0 - extent) / step_level0 + 1e-9)) + 1 if side_level0 >= extent else 0
    if side_level0 <= extent:
        return 1 if side_level0 > 0 else 0
    return int(np.ceil((side_level0 - extent) / step_level0 - 1e-9)) + 1
