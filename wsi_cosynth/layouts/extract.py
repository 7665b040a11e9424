"""Layouts from labelled tiles and from plain point tables (annotation tables, slide windows).

A layout point is a nucleus's centroid in tile pixels (pixel centres at ``+0.5``). When the
centroid of a concave nucleus falls outside it, the point is moved onto the nucleus's own pixel
nearest to the centroid (:func:`~wsi_cosynth.layouts.distance.nucleus_anchors`), the same anchor
the distance map peaks at, so every point marks its own nucleus.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import CosynthError
from ..records import LabelledTile, Layout, Provenance, SlidePlacement
from ..taxonomy import Taxonomy, map_name
from .distance import nucleus_anchors


def layout_from_tile(tile: LabelledTile) -> Layout:
    """The nuclei of ``tile`` as a :class:`Layout` (one point per instance id 1..N, in id order)."""
    ids, xy = nucleus_anchors(tile.instances)
    # LabelledTile guarantees contiguous ids 1..N, so ids == arange(1, N+1) and classes align.
    classes = tile.classes[ids - 1] if len(ids) else np.zeros(0, dtype=np.int64)
    return Layout(
        xy_tile=xy,
        classes=classes,
        size=tile.size,
        taxonomy=tile.taxonomy,
        provenance=tile.provenance,
        placement=tile.placement,
    )


def class_ids_from_names(
    names: Sequence[str] | np.ndarray, taxonomy: Taxonomy, class_map: dict[str, str] | None = None,
    *, where: str = "classes",
) -> np.ndarray:
    """(N,) int64 ids in ``taxonomy`` for class NAMES (user map, same name, built-in aliases).

    Each distinct name is mapped once; an unmappable name raises CosynthError naming it.
    """
    arr = np.asarray(names, dtype=object).reshape(-1)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, inv = np.unique(arr.astype(str), return_inverse=True)
    lut = np.array([map_name(str(n), taxonomy, class_map, where=where) for n in uniq], dtype=np.int64)
    return lut[inv]


def layout_from_points(
    xy_tile: np.ndarray,
    classes: Sequence[str] | np.ndarray,
    size: tuple[int, int],
    taxonomy: Taxonomy,
    *,
    name: str = "layout",
    class_map: dict[str, str] | None = None,
    provenance: Provenance | None = None,
    placement: SlidePlacement | None = None,
    clip: bool = False,
) -> Layout:
    """A :class:`Layout` from plain arrays.

    Parameters
    ----------
    xy_tile : (N, 2) float, (x, y) in tile pixels.
    classes : (N,) class NAMES (str, mapped by name into ``taxonomy``) or integer ids of ``taxonomy``.
    size : (H, W) of the tile.
    taxonomy : the class set of the layout.
    clip : if True, points outside the tile are DROPPED (useful for windows cut from a slide
        table); if False they raise CosynthError.
    """
    xy = np.asarray(xy_tile, dtype=np.float64).reshape(-1, 2)
    cls_in = np.asarray(classes).reshape(-1)
    if len(cls_in) != len(xy):
        raise CosynthError(f"layout {name!r}: {len(xy)} points but {len(cls_in)} classes")
    if len(cls_in) and cls_in.dtype.kind in "iu":
        cls = cls_in.astype(np.int64)
    else:
        cls = class_ids_from_names(cls_in, taxonomy, class_map, where=f"layout {name!r}")
    if clip and len(xy):
        h, w = int(size[0]), int(size[1])
        keep = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        xy, cls = xy[keep], cls[keep]
    prov = provenance if provenance is not None else Provenance(name=name)
    return Layout(xy_tile=xy, classes=cls, size=(int(size[0]), int(size[1])), taxonomy=taxonomy,
                  provenance=prov, placement=placement)


def layouts_from_slide_points(
    xy_slide: np.ndarray,
    class_ids: np.ndarray,
    taxonomy: Taxonomy,
    *,
    tile_size: int = 256,
    stride: int | None = None,
    origin_xy: tuple[float, float] | None = None,
    extent_xy: tuple[float, float] | None = None,
    min_points: int = 1,
    source: str | None = None,
    mpp: float | None = None,
    tissue: str | None = None,
) -> Iterator[Layout]:
    """Cut a slide-level point table into square-window layouts on a regular grid.

    Parameters
    ----------
    xy_slide : (N, 2) float, level-0 (x, y) of nuclei centroids.
    class_ids : (N,) int, ids in ``taxonomy`` (map names first with :func:`class_ids_from_names`).
    tile_size : window side in level-0 pixels (windows are in level-0 pixels, scale 1).
    stride : grid step (default ``tile_size``, non-overlapping).
    origin_xy, extent_xy : grid start and (width, height) covered; default the points' bounding box.
    min_points : windows with fewer points are skipped (tissue-free windows).

    Yields
    ------
    Layout per window, row-major, named ``w<x0>_<y0>``, with a :class:`SlidePlacement`.
    """
    xy = np.asarray(xy_slide, dtype=np.float64).reshape(-1, 2)
    cls = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    if len(xy) != len(cls):
        raise CosynthError(f"xy_slide has {len(xy)} points but class_ids has {len(cls)}")
    if tile_size <= 0:
        raise CosynthError(f"tile_size must be positive, got {tile_size}")
    if stride is not None and stride <= 0:
        raise CosynthError(f"stride must be a positive number of pixels, got {stride}")
    step = int(stride or tile_size)
    if len(xy) == 0:
        return
    x0, y0 = origin_xy if origin_xy is not None else (float(np.floor(xy[:, 0].min())), float(np.floor(xy[:, 1].min())))
    if extent_xy is not None:
        ex, ey = extent_xy
    else:
        ex, ey = xy[:, 0].max() - x0 + 1, xy[:, 1].max() - y0 + 1
    nx = max(int(np.floor((ex - tile_size) / step)) + 1, 1)
    ny = max(int(np.floor((ey - tile_size) / step)) + 1, 1)
    # Bucket points by grid cell of the step so each window only looks at nearby points.
    order = np.lexsort((xy[:, 0], xy[:, 1]))
    xy, cls = xy[order], cls[order]
    for j in range(ny):
        wy = y0 + j * step
        lo, hi = np.searchsorted(xy[:, 1], [wy, wy + tile_size])
        sub_xy, sub_cls = xy[lo:hi], cls[lo:hi]
        for i in range(nx):
            wx = x0 + i * step
            keep = (sub_xy[:, 0] >= wx) & (sub_xy[:, 0] < wx + tile_size)
            if int(keep.sum()) < min_points:
                continue
            name = f"w{int(wx)}_{int(wy)}"
            yield Layout(
                xy_tile=sub_xy[keep] - np.array([wx, wy]),
                classes=sub_cls[keep],
                size=(tile_size, tile_size),
                taxonomy=taxonomy,
                provenance=Provenance(name=name, source=source, x_slide=wx, y_slide=wy, mpp=mpp, tissue=tissue),
                placement=SlidePlacement(x0=wx, y0=wy, scale=1.0),
            )
