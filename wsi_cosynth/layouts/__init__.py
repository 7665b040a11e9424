"""Point layouts: extract from tiles or tables, rasterise, distance maps, resample, statistics.

Heavy pieces (the point-process model, statistics, I/O, previews) live in their own submodules
and are imported from there; this package namespace holds the names every stage needs.
"""

from .distance import distance_map, nucleus_anchors
from .extract import class_ids_from_names, layout_from_points, layout_from_tile, layouts_from_slide_points
from .rasterize import point_channels, point_collisions, rasterize_markers, rasterize_points

__all__ = [
    "class_ids_from_names",
    "distance_map",
    "layout_from_points",
    "layout_from_tile",
    "layouts_from_slide_points",
    "nucleus_anchors",
    "point_channels",
    "point_collisions",
    "rasterize_markers",
    "rasterize_points",
]
