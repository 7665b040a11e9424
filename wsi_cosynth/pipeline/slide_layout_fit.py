"""A layout model fitted to one slide's own nuclei, for ``--layouts resample`` on that slide.

Resampling from the bundled layout model draws CoNSeP's density and arrangement whatever the
slide holds. When the slide has nuclei of its own (annotations, or the detector's detections of an
unannotated slide), ``--layouts resample`` fits the point process to them instead
(:func:`wsi_cosynth.layouts.fit.fit_layout_model`), so new layouts keep the slide's density,
spacing and clustering.

Nuclei without a class (MoNuSeg outlines, the bundled detector's "nucleus") have no mark to fit:
when any nucleus of the slide is unclassified the model is fitted on one class, "nucleus", and
its draws become the synthesis model's unknown class (or ``--default-class``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import CosynthError
from ..layouts.point_process import LayoutModel
from ..records import UNCLASSIFIED, Layout
from ..taxonomy import Taxonomy, get_taxonomy, map_name
from .planning import SlidePlan


@dataclass(frozen=True)
class SlideLayoutModel:
    """A fitted model and ``lut[model class id] -> synthesis class id`` (0: unknown class)."""

    model: LayoutModel
    lut: np.ndarray
    n_nuclei: int
    classes_kept: bool


def fit_to_slide(plan: SlidePlan, own_layouts: list[Layout], taxonomy: Taxonomy,
                 class_map: dict[str, str] | None, *, unknown_class: bool, seed: int) -> SlideLayoutModel:
    """Fit the layout model to ``own_layouts`` (the slide's tiles' nuclei, in ``taxonomy``).

    Raises
    ------
    CosynthError
        The slide's tiles hold no nuclei.
    """
    from ..layouts.fit import fit_layout_model

    n_nuclei = sum(len(lay) for lay in own_layouts)
    if n_nuclei == 0:
        raise CosynthError(f"slide {plan.reader.path}: its tissue tiles hold no nuclei to fit a layout model to "
                           "(give --layout-model FILE)")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5F17]))
    tissue = next((lay.tissue for lay in own_layouts if lay.tissue), None)
    if not any(lay.unclassified.any() for lay in own_layouts):
        model = fit_layout_model(own_layouts, rng, tissue=tissue)
        return SlideLayoutModel(model, np.arange(taxonomy.n_classes + 1), n_nuclei, classes_kept=True)
    one_class = get_taxonomy("nucleus")
    merged = [replace(lay, classes=np.ones(len(lay), dtype=np.int64), taxonomy=one_class) for lay in own_layouts]
    model = fit_layout_model(merged, rng, tissue=tissue)
    return SlideLayoutModel(model, np.array([0, _nucleus_id(taxonomy, class_map, unknown_class)]), n_nuclei,
                            classes_kept=False)


def _nucleus_id(taxonomy: Taxonomy, class_map: dict[str, str] | None, unknown_class: bool) -> int:
    """The synthesis class a drawn "nucleus" takes: a mapped class, else the unknown class."""
    try:
        return map_name("nucleus", taxonomy, class_map, where="resampled layouts")
    except CosynthError:
        if unknown_class:
            return UNCLASSIFIED
        raise CosynthError(f"the slide's nuclei have no class and taxonomy {taxonomy.key!r} has no such class: "
                           f"give them one with --default-class NAME (one of {', '.join(taxonomy.names)})") from None
