"""Per-tile labels at the target resolution from an :class:`AnnotationTable`.

A tile is a level-0 box with origin (x0, y0) and ``scale`` level-0 pixels per tile pixel, so
``xy_tile = (xy_slide - (x0, y0)) / scale``. Instance maps are rasterised from the polygons that
intersect the tile, clipped at its borders (a nucleus cut by the border keeps its inside part);
ids are 1..N in the order of the table. Where polygons overlap, smaller nuclei are drawn over
larger ones so that none is swallowed; a nucleus left with no pixel is dropped. Point-only
annotations give layouts (points) but no instance map.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import CosynthError
from ..geometry import rasterize_polygon
from .table import AnnotationTable


def tile_instances(
    table: AnnotationTable,
    indices: np.ndarray,
    origin_xy_level0: tuple[float, float],
    scale: float,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Instance map of one tile.

    Parameters
    ----------
    table : the slide's annotations.
    indices : (K,) table indices of the nuclei to draw (e.g. ``table.query_nuclei(box)``).
    origin_xy_level0 : (x, y) level-0 pixel of the tile's top-left corner.
    scale : level-0 pixels per tile pixel.
    size : (height, width) of the tile.

    Returns
    -------
    instances : (H, W) int32, 0 background, ids 1..N contiguous.
    kept : (N,) int64 table indices of ids 1..N (instance id k is ``kept[k - 1]``).
    """
    h, w = int(size[0]), int(size[1])
    inst = np.zeros((h, w), dtype=np.int32)
    idx = np.asarray(indices, dtype=np.int64)
    if not len(idx):
        return inst, idx
    idx = idx[~table.is_point[idx]]
    geoms = table.geometries(idx)
    # Largest first, so smaller (overlapping) nuclei are painted on top.
    order = np.argsort(-table.areas()[idx], kind="stable")
    x0, y0 = float(origin_xy_level0[0]), float(origin_xy_level0[1])
    for k in order:
        g = geoms[k]
        bx0, by0, bx1, by1 = g.bounds
        c0 = max(int(math.floor((bx0 - x0) / scale)) - 1, 0)
        r0 = max(int(math.floor((by0 - y0) / scale)) - 1, 0)
        c1 = min(int(math.ceil((bx1 - x0) / scale)) + 1, w)
        r1 = min(int(math.ceil((by1 - y0) / scale)) + 1, h)
        if c1 <= c0 or r1 <= r0:
            continue
        # Rasterise only the nucleus's bounding window of the tile.
        mask = rasterize_polygon(g, (r1 - r0, c1 - c0), offset_xy=(x0 + c0 * scale, y0 + r0 * scale), scale=scale)
        inst[r0:r1, c0:c1][mask] = k + 1
    # Renumber to 1..N in table order, dropping nuclei that lost every pixel.
    present = np.zeros(len(idx) + 1, dtype=bool)
    present[np.unique(inst)] = True
    present[0] = False
    drawn = np.flatnonzero(present)  # values k + 1 that survive, ascending = table order
    lut = np.zeros(len(idx) + 1, dtype=np.int32)
    lut[drawn] = np.arange(1, len(drawn) + 1, dtype=np.int32)
    return lut[inst], idx[drawn - 1]


def tile_outlines(
    table: AnnotationTable,
    kept: np.ndarray,
    origin_xy_level0: tuple[float, float],
    scale: float,
    size: tuple[int, int],
) -> np.ndarray:
    """The source outlines of a tile's instances, clipped to the tile, in tile pixels.

    Parameters
    ----------
    kept : (N,) table indices of instance ids 1..N (as :func:`tile_instances` returns them).
    origin_xy_level0, scale, size : the tile, as for :func:`tile_instances` (size is (H, W)).

    Returns
    -------
    (N,) object array of shapely geometries: outline k - 1 belongs to instance id k, mapped by
    ``xy_tile = (xy_level0 - origin) / scale`` and clipped to [0, W] x [0, H] (a polygon, a
    multipolygon where the border cuts a concave nucleus in two).
    """
    import shapely

    idx = np.asarray(kept, dtype=np.int64)
    if not len(idx):
        return np.zeros(0, dtype=object)
    origin = np.asarray(origin_xy_level0, dtype=np.float64)
    tile_geoms = shapely.transform(table.geometries(idx), lambda xy: (xy - origin) / scale)
    return shapely.clip_by_rect(tile_geoms, 0.0, 0.0, float(size[1]), float(size[0]))


def tile_points(
    table: AnnotationTable,
    indices: np.ndarray,
    origin_xy_level0: tuple[float, float],
    scale: float,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus centroids inside one tile.

    Returns
    -------
    xy_tile : (N, 2) float64 (x, y) in tile pixels, inside [0, W) x [0, H).
    kept : (N,) int64 table indices of those nuclei.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if not len(idx):
        return np.zeros((0, 2)), idx
    xy = (table.centroids()[idx] - np.array(origin_xy_level0, dtype=np.float64)) / scale
    h, w = int(size[0]), int(size[1])
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    return xy[inside], idx[inside]


def require_outlines(table: AnnotationTable) -> None:
    """CosynthError when the table has only points: no instance map can be drawn from them."""
    if table.point_only:
        raise CosynthError(
            f"annotations {table.source} hold only points ({len(table)} nucleus centroids, no outlines): "
            f"instance maps cannot be made from them, so a real-tile export is impossible; point layouts "
            f"are still available (wsi_cosynth.pipeline.planning.iter_slide_tiles / tile_layout)"
        )
