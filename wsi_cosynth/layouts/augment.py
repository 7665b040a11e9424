"""Layout resampling that keeps a real layout's character: D4 symmetries, jitter, drop/insert.

Every function returns a NEW :class:`Layout` (records are frozen) and takes its randomness from
an explicit ``numpy.random.Generator``. Coordinates stay in tile pixels, inside [0, W) x [0, H).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.spatial import cKDTree

from ..errors import CosynthError
from ..records import Layout


def _inside(xy: np.ndarray, h: int, w: int) -> np.ndarray:
    """Clamp onto [0, W) x [0, H): a point mapped exactly onto the far edge moves just inside."""
    xy = xy.copy()
    xy[:, 0] = np.clip(xy[:, 0], 0.0, np.nextafter(w, 0))
    xy[:, 1] = np.clip(xy[:, 1], 0.0, np.nextafter(h, 0))
    return xy


def d4(layout: Layout, k: int) -> Layout:
    """Element ``k`` (0..7) of the dihedral group: rotate by ``(k % 4) * 90`` degrees
    counter-clockwise (as ``np.rot90`` on the image), then for ``k >= 4`` flip left-right.

    Matches the same transform applied to the tile image: pixel (row, col) of
    ``np.rot90(image, k % 4)`` (then ``np.fliplr`` when k >= 4) holds the point. Rotations by
    90/270 degrees swap the tile's height and width.
    """
    if not 0 <= int(k) <= 7:
        raise CosynthError(f"D4 element must be an integer in 0..7, got {k}")
    h, w = layout.size
    x, y = layout.xy_tile[:, 0], layout.xy_tile[:, 1]
    for _ in range(int(k) % 4):
        # np.rot90 (counter-clockwise): pixel (r, c) -> (w - 1 - c, r); centres: (x, y) -> (y, w - x).
        x, y = y, w - x
        h, w = w, h
    if int(k) >= 4:
        x = w - x
    xy = _inside(np.stack([x, y], axis=1), h, w)
    return replace(layout, xy_tile=xy, size=(h, w), placement=None)


def random_d4(layout: Layout, rng: np.random.Generator) -> Layout:
    """A uniformly random D4 element applied to ``layout``."""
    return d4(layout, int(rng.integers(8)))


def jitter(layout: Layout, sigma_px: float, rng: np.random.Generator) -> Layout:
    """Move every point by an isotropic Gaussian step of std ``sigma_px``, clamped into the tile."""
    if sigma_px < 0:
        raise CosynthError(f"jitter sigma must be >= 0 px, got {sigma_px}")
    h, w = layout.size
    xy = layout.xy_tile + rng.normal(0.0, sigma_px, size=layout.xy_tile.shape)
    return replace(layout, xy_tile=_inside(xy, h, w))


def _stratified_counts(classes: np.ndarray, n_classes: int, frac: float) -> np.ndarray:
    """Per-class counts summing to round(frac * N), proportional to the class counts."""
    counts = np.bincount(classes, minlength=n_classes + 1)[1:].astype(np.float64)
    total = int(round(frac * counts.sum()))
    exact = counts * frac
    base = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: total - int(base.sum())]] += 1
    return base


def drop_insert(
    layout: Layout,
    rng: np.random.Generator,
    *,
    drop_frac: float = 0.1,
    insert_frac: float = 0.1,
    min_dist_px: float = 6.0,
    max_tries: int = 50,
) -> Layout:
    """Drop and insert points, each stratified by class so the class proportions are kept.

    Drops ``round(drop_frac * n_c)`` random points of each class c; inserts about
    ``insert_frac * n_c`` new class-c points, each next to a random existing class-c point
    (at a distance drawn from that layout's nearest-neighbour distances, random direction),
    rejected when closer than ``min_dist_px`` to any point or outside the tile. Points that find
    no place in ``max_tries`` are not inserted (so dense layouts may grow less).
    """
    if not (0 <= drop_frac <= 1 and insert_frac >= 0):
        raise CosynthError(f"need 0 <= drop_frac <= 1 and insert_frac >= 0, got {drop_frac}, {insert_frac}")
    k = layout.taxonomy.n_classes
    xy, cls = layout.xy_tile, layout.classes
    if len(cls) == 0:
        return layout
    n_drop = _stratified_counts(cls, k, drop_frac)
    n_ins = _stratified_counts(cls, k, insert_frac)
    keep = np.ones(len(cls), dtype=bool)
    for c in range(1, k + 1):
        idx = np.flatnonzero(cls == c)
        if n_drop[c - 1]:
            keep[rng.choice(idx, size=int(n_drop[c - 1]), replace=False)] = False
    nn = cKDTree(xy).query(xy, k=2)[0][:, 1] if len(xy) > 1 else np.array([2 * min_dist_px])
    h, w = layout.size
    new_xy: list[np.ndarray] = [xy[keep]]
    new_cls: list[np.ndarray] = [cls[keep]]
    placed = xy[keep]
    for c in range(1, k + 1):
        src = xy[cls == c]
        for _ in range(int(n_ins[c - 1])):
            for _try in range(max_tries):
                r = max(float(rng.choice(nn)), min_dist_px)
                a = rng.uniform(0, 2 * np.pi)
                p = src[rng.integers(len(src))] + r * np.array([np.cos(a), np.sin(a)])
                if not (0 <= p[0] < w and 0 <= p[1] < h):
                    continue
                if len(placed) and np.hypot(*(placed - p).T).min() < min_dist_px:
                    continue
                placed = np.vstack([placed, p])
                new_xy.append(p[None])
                new_cls.append(np.array([c]))
                break
    return replace(layout, xy_tile=np.concatenate(new_xy), classes=np.concatenate(new_cls))
