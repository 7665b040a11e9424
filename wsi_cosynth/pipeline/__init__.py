"""Export orchestration: slide tiles -> labels (real) or layouts -> synthesis -> dataset writer."""

from .planning import (
    SlidePlan,
    SlideTile,
    TileNuclei,
    TilePosition,
    iter_slide_tiles,
    labelled_tile,
    plan_slide,
    tile_layout,
)
from .real import ExportSummary, export_real

__all__ = [
    "ExportSummary",
    "SlidePlan",
    "SlideTile",
    "TileNuclei",
    "TilePosition",
    "export_real",
    "iter_slide_tiles",
    "labelled_tile",
    "plan_slide",
    "tile_layout",
]
