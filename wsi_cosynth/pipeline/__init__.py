"""Export orchestration: slide tiles -> labels (real) or layouts -> synthesis -> dataset writer."""

from .real import (
    ExportSummary,
    SlidePlan,
    SlideTile,
    TileNuclei,
    TilePosition,
    export_real,
    iter_slide_tiles,
    labelled_tile,
    plan_slide,
    tile_layout,
)

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
