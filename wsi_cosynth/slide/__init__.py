"""Whole slides: open and read at a chosen mpp, tissue masks, tile grids.

Heavy libraries (openslide, PIL, scikit-image) are imported by the functions that use them.
"""

from .grid import TileGrid, tile_grid, tissue_fractions
from .reader import SlideReader, open_slide, slide_mpp_from_properties
from .resolution import best_level, scale_to_level0
from .tissue import TissueMask, TissueParams, detect_tissue, save_mask_png, tissue_mask_from_rgb

__all__ = [
    "SlideReader",
    "TileGrid",
    "TissueMask",
    "TissueParams",
    "best_level",
    "detect_tissue",
    "open_slide",
    "save_mask_png",
    "scale_to_level0",
    "slide_mpp_from_properties",
    "tile_grid",
    "tissue_fractions",
    "tissue_mask_from_rgb",
]
