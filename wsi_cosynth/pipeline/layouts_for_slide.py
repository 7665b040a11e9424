"""Where a synthetic export's layouts come from: the slide's annotations, or the layout model.

``annotations``: each tissue tile's annotated nuclei become its layout (classes mapped by name
into the synthesis model's taxonomy). ``resample``: each tile gets a NEW layout drawn from a
fitted layout model (:mod:`wsi_cosynth.layouts.point_process`): ``--layout-model`` when given,
else one fitted to the slide's own nuclei (annotations or detections, :mod:`.slide_layout_fit`),
else the bundled CoNSeP model (a slide with no nuclei at all and no detector).
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import CosynthError
from ..layouts.point_process import LayoutModel
from ..records import Layout
from ..taxonomy import Taxonomy, class_mapping, is_unclassified, with_default_class
from .planning import SlidePlan, class_lookup, tile_layout
from .slide_layout_fit import fit_to_slide

LayoutSource = Literal["auto", "annotations", "resample"]
LAYOUT_SOURCES = ("auto", "annotations", "resample")


def default_layout_model_path() -> Path:
    """The bundled layout model (fitted on CoNSeP training layouts, 0.25 um/px)."""
    return Path(str(resources.files("wsi_cosynth") / "assets" / "layout-model-consep.json"))


def resolve_layout_source(source: str, plan: SlidePlan) -> Literal["annotations", "resample"]:
    if source not in LAYOUT_SOURCES:
        raise CosynthError(f"unknown --layouts {source!r} (valid: {', '.join(LAYOUT_SOURCES)})")
    has_nuclei = plan.annotations is not None and len(plan.annotations) > 0
    if source == "annotations" and not has_nuclei:
        raise CosynthError(
            f"--layouts annotations: slide {plan.reader.path} has no nuclei annotations "
            "(give --annotations FILE, put a sidecar .geojson next to the slide, or use --layouts resample)"
        )
    if source == "auto":
        return "annotations" if has_nuclei else "resample"
    return source  # type: ignore[return-value]


def annotated_layouts(plan: SlidePlan, taxonomy: Taxonomy, class_map: dict[str, str] | None,
                      max_tiles: int | None, *, unclassified: bool = False) -> list[Layout]:
    """One layout per tissue tile from the slide's annotated nuclei (no pixels are read).
    ``unclassified``: nuclei without a class stay unclassified (a model with an unknown class)."""
    lookup = class_lookup(plan.annotations, taxonomy, class_map, unclassified=unclassified)
    layouts = []
    for pos in plan.positions():
        if max_tiles is not None and len(layouts) >= max_tiles:
            break
        layouts.append(_layout_at(plan, pos, taxonomy, lookup))
    return layouts


def _layout_at(plan: SlidePlan, pos, taxonomy: Taxonomy, lookup: dict[str, int]) -> Layout:
    from .planning import SlideTile

    tile = SlideTile(position=pos, image=np.zeros((0, 0, 3), np.uint8), nuclei=plan.nuclei_of(pos))
    return tile_layout(plan, tile, taxonomy, lookup)


def resampled_layouts(plan: SlidePlan, taxonomy: Taxonomy, class_map: dict[str, str] | None,
                      max_tiles: int | None, *, layout_model: str | Path | LayoutModel | None, seed: int,
                      lut: np.ndarray | None = None) -> list[Layout]:
    """One NEW layout per tissue tile, sampled from the layout model at the tiles' resolution.
    ``lut``: model class id -> ``taxonomy`` id (default: the classes mapped by name)."""
    from ..layouts.point_process import load_layout_model, sample_layout

    model = layout_model if isinstance(layout_model, LayoutModel) else load_layout_model(
        layout_model or default_layout_model_path())
    lut = class_mapping(model.taxonomy, taxonomy, class_map) if lut is None else lut
    # The process was fitted in pixels of model.mpp: sample the same physical window, then scale.
    ratio = (plan.target_mpp / model.mpp) if model.mpp else 1.0
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x1A70]))
    layouts = []
    for pos in plan.positions():
        if max_tiles is not None and len(layouts) >= max_tiles:
            break
        window = max(1, int(round(pos.tile_size * ratio)))
        drawn = sample_layout(model, (window, window), rng, name=pos.name)
        xy = np.clip(drawn.xy_tile / ratio, 0, np.nextafter(pos.tile_size, 0))
        layouts.append(Layout(xy_tile=xy, classes=lut[drawn.classes], size=(pos.tile_size, pos.tile_size),
                              taxonomy=taxonomy, provenance=plan.provenance(pos), placement=pos.placement))
    return layouts


def with_tissue(layouts: list[Layout], tissue: str | None) -> list[Layout]:
    """Give layouts without a tissue type the fallback ``tissue``."""
    return [lay if lay.tissue or not tissue else replace(lay, provenance=replace(lay.provenance, tissue=tissue))
            for lay in layouts]


def choose_layouts(plan: SlidePlan, taxonomy: Taxonomy, *, layouts: str, layout_model: str | Path | None,
                   class_map: dict[str, str] | None, default_class: str | None, max_tiles: int | None, seed: int,
                   tissue: str | None, unknown_class: bool = False) -> tuple[list[Layout], list[str]]:
    """The layouts of a planned slide in the model's ``taxonomy``, and the notes to report.

    ``layouts`` is the layout source (see :func:`resolve_layout_source`); unclassified nuclei take
    ``default_class``, or stay unclassified for a model with an ``unknown_class``; layouts without
    a tissue type take ``tissue``. One slide's share of a synthetic export, alone or in a cohort.
    """
    class_map = with_default_class(class_map, default_class)
    source = resolve_layout_source(layouts, plan)
    notes = list(plan.warnings)
    if source == "annotations":
        chosen = annotated_layouts(plan, taxonomy, class_map, max_tiles, unclassified=unknown_class)
    elif layout_model is None and plan.annotations is not None and len(plan.annotations) > 0:
        own = with_tissue(annotated_layouts(plan, taxonomy, class_map, None, unclassified=True), tissue)
        fitted = fit_to_slide(plan, own, taxonomy, class_map, unknown_class=unknown_class, seed=seed)
        chosen = resampled_layouts(plan, taxonomy, class_map, max_tiles, layout_model=fitted.model, seed=seed,
                                   lut=fitted.lut)
        notes.append(f"layouts resampled from a layout model fitted to the slide's own {fitted.n_nuclei} nuclei"
                     + ("" if fitted.classes_kept else " (as one class: some have none)"))
    else:
        chosen = resampled_layouts(plan, taxonomy, class_map, max_tiles, layout_model=layout_model, seed=seed)
        which = Path(layout_model).name if layout_model else "bundled with the package (fitted on CoNSeP, colon)"
        notes.append(f"layouts resampled from the layout model {which} ({len(chosen)} tiles)")
    chosen = with_tissue(chosen, tissue)
    if default_class is not None and plan.annotations is not None and source == "annotations":
        n_unclassified = sum(is_unclassified(str(c)) for c in plan.annotations.classes)
        if n_unclassified:
            notes.append(f"{n_unclassified} nuclei without a class were given class {default_class!r} (--default-class)")
    elif unknown_class and source == "annotations":
        n_unclassified = sum(int(lay.unclassified.sum()) for lay in chosen)
        if n_unclassified:
            notes.append(f"{n_unclassified} nuclei without a class are drawn as the model's unknown class")
    return chosen, notes
