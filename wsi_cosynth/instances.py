"""Instance separation: turn (distance map, semantic label, point layout) into nuclei instances.

Three methods, as in the paper's ablation (docs/METHOD.md, "Instances"):

- :func:`separate_instances`: point-guided marker watershed. Markers are the layout points,
  the landscape is the inverted distance map ``-d``, the mask is the semantic foreground; each
  instance takes its marker's class (the majority semantic class where the marker has none).
- :func:`separate_connected_components`: connected components of the semantic foreground.
- :func:`separate_marker_free`: watershed from the h-maxima of the distance map (no points).

All three return ``(instances, classes)``: (H, W) int32 ids 1..N contiguous and (N,) int64
classes of ids 1..N, ready for :class:`wsi_cosynth.records.LabelledTile`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from .errors import CosynthError
from .layouts.rasterize import rasterize_markers
from .records import relabel_contiguous


def _validate_maps(distance: np.ndarray | None, semantic: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    sem = np.asarray(semantic)
    if sem.ndim != 2:
        raise CosynthError(f"semantic must be a 2-D (H, W) class map, got shape {sem.shape}")
    if not np.issubdtype(sem.dtype, np.integer):
        raise CosynthError(f"semantic must hold integer class ids, got dtype {sem.dtype}")
    if sem.size and int(sem.min()) < 0:
        raise CosynthError(f"semantic has negative class ids (min {int(sem.min())})")
    if distance is None:
        return None, sem.astype(np.int64, copy=False)
    d = np.asarray(distance, dtype=np.float32)
    if d.shape != sem.shape:
        raise CosynthError(f"distance map shape {d.shape} does not match semantic shape {sem.shape}")
    if not np.isfinite(d).all():
        raise CosynthError("distance map contains NaN or infinite values")
    return d, sem.astype(np.int64, copy=False)


def majority_classes(instances: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    """(N,) int64: per instance id 1..N (N = max id), its most frequent non-zero semantic class.

    Ties go to the lower class id; an instance with no foreground semantic pixel gets 0.
    """
    inst = np.asarray(instances, dtype=np.int64)
    sem = np.asarray(semantic, dtype=np.int64)
    n = int(inst.max()) if inst.size else 0
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = int(sem.max()) + 1
    table = np.bincount((inst * k + sem).ravel(), minlength=(n + 1) * k).reshape(n + 1, k)
    table[:, 0] = 0
    best = table.argmax(axis=1)
    best[table.max(axis=1) == 0] = 0
    return best[1:].astype(np.int64)


def _finish(labels: np.ndarray, semantic: np.ndarray, marker_classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Relabel to 1..N and attach classes: marker class where > 0, majority otherwise."""
    old_max = int(labels.max()) if labels.size else 0
    by_old = np.zeros(old_max + 1, dtype=np.int64)
    if old_max:
        by_old[1:] = majority_classes(labels, semantic)
        if marker_classes is not None:
            m = marker_classes[: old_max]
            has = m > 0
            by_old[1:][: len(m)][has] = m[has]
    inst, classes = relabel_contiguous(labels, by_old)
    return inst, classes


def _snap_markers(markers: np.ndarray, fg: np.ndarray, radius: float) -> np.ndarray:
    """Move markers that lie on background to the nearest foreground pixel within ``radius``.

    A marker with no foreground pixel within ``radius``, or whose target already holds a marker,
    is dropped (its point produced no nucleus in the semantic map).
    """
    off = np.flatnonzero((markers > 0) & ~fg)
    if len(off) == 0 or not fg.any():
        return np.where(fg, markers, 0)
    dist, (ri, ci) = ndimage.distance_transform_edt(~fg, return_indices=True)
    out = np.where(fg, markers, 0)
    flat_r, flat_c = np.unravel_index(off, fg.shape)
    for r, c in zip(flat_r, flat_c):
        if dist[r, c] <= radius:
            tr, tc = ri[r, c], ci[r, c]
            if out[tr, tc] == 0:
                out[tr, tc] = markers[r, c]
    return out


def instance_centroids(instances: np.ndarray, n: int | None = None) -> np.ndarray:
    """(n, 2) float (x, y) centroids of ids 1..n of an instance map (n: its largest id unless given),
    in pixel-centre coordinates (pixel (0, 0) spans 0..1 and has its centre at 0.5); NaN for an id
    with no pixels."""
    n = (int(instances.max()) if instances.size else 0) if n is None else int(n)
    rows, cols = np.nonzero(instances)
    ids = instances[rows, cols]
    count = np.bincount(ids, minlength=n + 1)[1:n + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([np.bincount(ids, weights=cols + 0.5, minlength=n + 1)[1:n + 1] / count,
                         np.bincount(ids, weights=rows + 0.5, minlength=n + 1)[1:n + 1] / count], axis=1)


def separate_instances(
    distance: np.ndarray,
    semantic: np.ndarray,
    points_xy: np.ndarray,
    point_classes: np.ndarray | None = None,
    *,
    snap_radius: float = 3.0,
    unmarked: Literal["keep", "drop"] = "keep",
    connectivity: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Point-guided marker-controlled watershed.

    Parameters
    ----------
    distance : (H, W) float in [0, 1], distance map (1 at nucleus centres, 0 at boundaries).
    semantic : (H, W) int, 0 = background, class ids > 0 for nuclei.
    points_xy : (N, 2) float, layout points (x, y) in tile pixels, inside the tile.
    point_classes : (N,) int class ids >= 1, 0 for a point of unknown class (``records.UNCLASSIFIED``:
        its instance takes the majority class), or None (then every class is the majority one).
    snap_radius : a point on background is moved to the nearest foreground pixel within this
        many pixels, else dropped. Two points in one pixel: the lower index wins.
    unmarked : foreground components that no marker reaches become extra instances with their
        majority class (``"keep"``, so the instance map covers the semantic foreground) or are
        removed (``"drop"``).
    connectivity : 1 (4-neighbours) or 2 (8-neighbours) for the flooding.

    Returns
    -------
    instances : (H, W) int32, ids 1..M contiguous; marked instances first, in point order.
    classes : (M,) int64, class of each instance (marker class, or majority where none).

    Raises
    ------
    CosynthError
        Mismatched shapes, non-finite distances, points outside the tile or class ids < 0.
    """
    from skimage.segmentation import watershed

    d, sem = _validate_maps(distance, semantic)
    assert d is not None
    if unmarked not in ("keep", "drop"):
        raise CosynthError(f"unmarked must be 'keep' or 'drop', got {unmarked!r}")
    xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    n = len(xy)
    cls = None
    if point_classes is not None:
        cls = np.asarray(point_classes).reshape(-1)
        if len(cls) != n:
            raise CosynthError(f"points_xy has {n} points but point_classes has {len(cls)}")
        if n and (not np.issubdtype(cls.dtype, np.integer) or int(cls.min()) < 0):
            raise CosynthError("point_classes must be integer class ids >= 1 (0: unknown class)")
        cls = cls.astype(np.int64)
    fg = sem > 0
    markers = rasterize_markers(xy, sem.shape)
    markers = _snap_markers(markers, fg, snap_radius)
    labels = np.zeros(sem.shape, dtype=np.int64)
    if fg.any() and markers.any():
        labels = watershed(-d, markers=markers, mask=fg, connectivity=connectivity).astype(np.int64)
    rest = fg & (labels == 0)
    if unmarked == "keep" and rest.any():
        extra, n_extra = ndimage.label(rest, structure=ndimage.generate_binary_structure(2, connectivity))
        labels[rest] = extra[rest] + n
    return _finish(labels, sem, cls)


def separate_connected_components(semantic: np.ndarray, *, connectivity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: each connected component of the semantic foreground is one instance.

    Returns ``(instances (H, W) int32 ids 1..N, classes (N,) int64 majority classes)``.
    """
    _, sem = _validate_maps(None, semantic)
    labels, _ = ndimage.label(sem > 0, structure=ndimage.generate_binary_structure(2, connectivity))
    return _finish(labels.astype(np.int64), sem, None)


def separate_marker_free(
    distance: np.ndarray, semantic: np.ndarray, *, h: float = 0.1, connectivity: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: watershed of ``-distance`` from its h-maxima (regional maxima at least ``h`` high).

    Foreground components without any h-maximum are kept as single instances. Returns
    ``(instances (H, W) int32 ids 1..N, classes (N,) int64 majority classes)``.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    d, sem = _validate_maps(distance, semantic)
    assert d is not None
    if not h > 0:
        raise CosynthError(f"h must be > 0, got {h}")
    fg = sem > 0
    struct = ndimage.generate_binary_structure(2, connectivity)
    peaks = h_maxima(np.where(fg, d, 0).astype(np.float64), h) > 0
    markers, n = ndimage.label(peaks & fg, structure=np.ones((3, 3), bool))
    labels = np.zeros(sem.shape, dtype=np.int64)
    if n:
        labels = watershed(-d, markers=markers, mask=fg, connectivity=connectivity).astype(np.int64)
    rest = fg & (labels == 0)
    if rest.any():
        extra, _ = ndimage.label(rest, structure=struct)
        labels[rest] = extra[rest] + n
    return _finish(labels, sem, None)
