"""wsi-cosynth: whole-slide nuclei datasets, real and co-synthesised with a joint diffusion model.

The public API is small: the records, taxonomies and the functions a dataset-building script needs.
Heavy modules (torch, dask, openslide) are imported only when their functions are called.
"""

from .api import detect, export, export_cohort, load_model, synthesize, synthesize_region
from .errors import CosynthError
from .records import LabelledTile, Layout, Provenance, SlidePlacement, relabel_contiguous
from .taxonomy import Taxonomy, class_mapping, get_taxonomy

__version__ = "0.1.0"

__all__ = [
    "CosynthError",
    "LabelledTile",
    "Layout",
    "Provenance",
    "SlidePlacement",
    "Taxonomy",
    "class_mapping",
    "detect",
    "export",
    "export_cohort",
    "load_model",
    "synthesize",
    "synthesize_region",
    "get_taxonomy",
    "relabel_contiguous",
]
