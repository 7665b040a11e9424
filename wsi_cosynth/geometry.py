"""Exact conversions between nucleus masks and polygons.

Frame: polygon vertices are (x, y) on the pixel-CORNER grid, so pixel (row r, col c) is the unit
square [c, c+1] x [r, r+1] and its centre is (c + 0.5, r + 0.5). This is COCO's convention
(docs/FORMATS.md 3.2: the square [0,0,4,0,4,4,0,4] covers 16 pixels) and QuPath's.

``mask_to_polygons`` traces the outline along pixel edges (the union of the mask's pixel squares),
so ``rasterize_polygon(mask_to_polygons(m))`` gives back ``m`` exactly; contours through pixel
centres (cv2.findContours) would lose half a pixel all round.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from skimage.draw import polygon as draw_polygon


def mask_to_polygons(mask: np.ndarray, *, offset_xy: tuple[float, float] = (0.0, 0.0)) -> list[Polygon]:
    """Outline a binary mask as valid polygons on the pixel-edge grid.

    Parameters
    ----------
    mask : (H, W) bool
        The pixels of one object (may be several disconnected parts).
    offset_xy : (x, y) added to every vertex (e.g. the mask's crop origin).

    Returns
    -------
    list of shapely Polygon, largest area first; empty if the mask is empty. Holes are kept as
    interior rings. Collinear vertices along pixel edges are removed.
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return []
    rows, x0, x1 = _row_runs(m)
    boxes = shapely.box(x0 + offset_xy[0], rows + offset_xy[1], x1 + offset_xy[0], rows + 1 + offset_xy[1])
    merged = shapely.union_all(boxes)
    # A zero-tolerance simplify only drops vertices that are exactly collinear.
    merged = shapely.simplify(merged, 0.0, preserve_topology=True)
    parts = list(merged.geoms) if isinstance(merged, MultiPolygon) else [merged]
    parts = [p for p in parts if isinstance(p, Polygon) and not p.is_empty]
    return sorted(parts, key=lambda p: -p.area)


def _row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True pixels: (row, x_start, x_end_exclusive) arrays."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    diff = np.diff(padded, axis=1)
    r_start, c_start = np.nonzero(diff == 1)
    r_end, c_end = np.nonzero(diff == -1)
    # np.nonzero is row-major, so starts and ends pair up run by run.
    return r_start.astype(np.float64), c_start.astype(np.float64), c_end.astype(np.float64)


def rasterize_polygon(
    geometry: Polygon | MultiPolygon,
    shape: tuple[int, int],
    *,
    offset_xy: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> np.ndarray:
    """Pixels whose centre lies inside a polygon.

    Parameters
    ----------
    geometry : Polygon or MultiPolygon with (x, y) vertices in some frame.
    shape : (H, W) of the output raster.
    offset_xy, scale : the raster's frame: raster (x, y) = (geometry (x, y) - offset_xy) / scale.

    Returns
    -------
    (H, W) bool mask. Parts outside the raster are clipped.
    """
    out = np.zeros(shape, dtype=bool)
    parts = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
    for part in parts:
        if part.is_empty:
            continue
        _fill_ring(out, np.asarray(part.exterior.coords), offset_xy, scale, True)
        for hole in part.interiors:
            _fill_ring(out, np.asarray(hole.coords), offset_xy, scale, False)
    return out


def _fill_ring(out: np.ndarray, xy: np.ndarray, offset_xy, scale: float, value: bool) -> None:
    x = (xy[:, 0] - offset_xy[0]) / scale
    y = (xy[:, 1] - offset_xy[1]) / scale
    # skimage.draw.polygon puts vertex (r, c) at pixel centre (r, c): shift corner-grid by -0.5.
    rr, cc = draw_polygon(y - 0.5, x - 0.5, shape=out.shape)
    out[rr, cc] = value


def instance_bboxes(instances: np.ndarray, n: int | None = None) -> np.ndarray:
    """Per-instance bounding boxes as (N, 4) int64 (row_min, row_max_excl, col_min, col_max_excl).

    Row k describes instance id k + 1; an absent id gets (0, 0, 0, 0).
    """
    from scipy import ndimage

    inst = np.asarray(instances)
    n = int(inst.max()) if n is None else n
    out = np.zeros((n, 4), dtype=np.int64)
    for k, sl in enumerate(ndimage.find_objects(inst, max_label=n)):
        if sl is not None:
            out[k] = (sl[0].start, sl[0].stop, sl[1].start, sl[1].stop)
    return out
