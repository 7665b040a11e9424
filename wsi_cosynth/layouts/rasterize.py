"""Point maps: a layout drawn as one pixel per nucleus (the ``pc`` condition of the model).

A point at ``(x, y)`` in tile pixels lands on pixel ``(row, col) = (floor(y), floor(x))``.
Collisions (two points in one pixel, possible only when centroids are < 1 px apart): the point
with the LOWEST index keeps the pixel; the others are not drawn. :func:`point_collisions` counts
them so callers can report it.
"""

from __future__ import annotations

import numpy as np

from ..errors import CosynthError


def _validate_points(
    xy_tile: np.ndarray, classes: np.ndarray, size: tuple[int, int], n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, int, int]:
    xy = np.asarray(xy_tile, dtype=np.float64)
    cls = np.asarray(classes)
    if xy.size == 0:
        xy = xy.reshape(0, 2)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise CosynthError(f"xy_tile must be (N, 2) (x, y) points, got shape {xy.shape}")
    cls = cls.reshape(-1)
    if len(cls) != len(xy):
        raise CosynthError(f"xy_tile has {len(xy)} points but classes has {len(cls)} entries")
    if len(cls) and not np.issubdtype(cls.dtype, np.integer):
        raise CosynthError(f"classes must be integer class ids, got dtype {cls.dtype}")
    try:
        h, w = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        raise CosynthError(f"size must be (height, width), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise CosynthError(f"size must be positive (height, width), got {size!r}")
    if not np.isfinite(xy).all():
        raise CosynthError("xy_tile contains NaN or infinite coordinates")
    outside = (xy[:, 0] < 0) | (xy[:, 0] >= w) | (xy[:, 1] < 0) | (xy[:, 1] >= h)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise CosynthError(
            f"xy_tile: {int(outside.sum())} point(s) outside the {w}x{h} tile "
            f"(valid x in [0, {w}), y in [0, {h})), e.g. (x={xy[i, 0]:.2f}, y={xy[i, 1]:.2f})"
        )
    if len(cls) and int(cls.min()) < 1:
        raise CosynthError(f"classes: class id {int(cls.min())} is not a nucleus class (ids start at 1)")
    if n_classes is not None and len(cls) and int(cls.max()) > n_classes:
        raise CosynthError(f"classes: class id {int(cls.max())} exceeds n_classes={n_classes}")
    return xy, cls.astype(np.int64), h, w


def _pixels(xy: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, col and flat index of each point, and the index of the first point per pixel."""
    col = np.floor(xy[:, 0]).astype(np.int64)
    row = np.floor(xy[:, 1]).astype(np.int64)
    flat = row * w + col
    _, first = np.unique(flat, return_index=True)
    return row, col, first


def point_collisions(xy_tile: np.ndarray, size: tuple[int, int]) -> int:
    """Number of points that share a pixel with a lower-indexed point (not drawn)."""
    xy, _, _, w = _validate_points(xy_tile, np.ones(len(np.asarray(xy_tile).reshape(-1, 2)), np.int64), size)
    if len(xy) == 0:
        return 0
    _, _, first = _pixels(xy, w)
    return len(xy) - len(first)


def rasterize_points(xy_tile: np.ndarray, classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Class id at each point's pixel, 0 elsewhere.

    Parameters
    ----------
    xy_tile : (N, 2) float, points (x, y) in tile pixels, inside [0, W) x [0, H).
    classes : (N,) int, class ids >= 1.
    size : (H, W) of the output.

    Returns
    -------
    (H, W) int64: ``classes[i]`` at ``(floor(y_i), floor(x_i))``; on collisions the lowest
    index wins.

    Raises
    ------
    CosynthError
        Points outside the tile, non-finite coordinates, class ids < 1, mismatched lengths.
    """
    xy, cls, h, w = _validate_points(xy_tile, classes, size)
    out = np.zeros((h, w), dtype=np.int64)
    if len(xy):
        row, col, first = _pixels(xy, w)
        out[row[first], col[first]] = cls[first]
    return out


def rasterize_markers(xy_tile: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Point index + 1 at each point's pixel, 0 elsewhere: (H, W) int32 watershed markers.

    Collisions as in :func:`rasterize_points` (lowest index wins; the others are absent).
    """
    xy, _, h, w = _validate_points(xy_tile, np.ones(len(np.asarray(xy_tile).reshape(-1, 2)), np.int64), size)
    out = np.zeros((h, w), dtype=np.int32)
    if len(xy):
        row, col, first = _pixels(xy, w)
        out[row[first], col[first]] = (first + 1).astype(np.int32)
    return out


def point_channels(
    xy_tile: np.ndarray, classes: np.ndarray, size: tuple[int, int], n_classes: int
) -> np.ndarray:
    """One-hot point map: channel k-1 is 1 at the pixels of class-k points.

    Parameters
    ----------
    xy_tile, classes, size : as in :func:`rasterize_points`.
    n_classes : K, the number of nucleus classes (background has no channel).

    Returns
    -------
    (K, H, W) float32 in {0, 1}; at most one channel is 1 per pixel (collisions as in
    :func:`rasterize_points`).
    """
    if int(n_classes) < 1:
        raise CosynthError(f"n_classes must be >= 1, got {n_classes}")
    _validate_points(xy_tile, classes, size, int(n_classes))
    ids = rasterize_points(xy_tile, classes, size)
    out = np.zeros((int(n_classes),) + ids.shape, dtype=np.float32)
    rows, cols = np.nonzero(ids)
    out[ids[rows, cols] - 1, rows, cols] = 1.0
    return out
