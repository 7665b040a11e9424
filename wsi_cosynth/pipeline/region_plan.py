"""What region synthesis decides before any sampling: the region of the slide, its canvas at the
model's resolution, its nuclei as points in the model's classes, its tissue word.

Frames: ``region_level0`` is (x, y, w, h) in level-0 pixels of the source slide; the canvas is in
pixels at the model's mpp, its pixel (row r, col c) covering level-0 x0 + c * scale ...
(``scale`` = model mpp / slide mpp level-0 px per canvas px). Points are (x, y) canvas pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..annotations.labels import tile_points
from ..errors import CosynthError
from ..records import SlidePlacement
from ..taxonomy import Taxonomy, is_unclassified, with_default_class
from .planning import class_lookup, plan_slide, safe_stem

# Background of the canvas outside the slide (a region at the slide's edge rounded up to a cell).
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class RegionPlan:
    """The region to synthesise.

    stem : the source slide's file stem (output names).
    source : the source slide's path.
    region_level0 : (x, y, w, h) level-0 px of the source slide.
    slide_mpp, mpp : microns per level-0 px of the source, per canvas px (the model's).
    size_hw : (H, W) px of the region at ``mpp`` (the output slide's size).
    canvas_hw : (H, W) px that are sampled: ``size_hw`` rounded up to the model's cell and to at
        least one window; the output is its top-left ``size_hw``.
    xy : (N, 2) float64 nucleus centroids (x, y) in canvas px, inside ``size_hw``.
    classes : (N,) int64 class ids of ``xy`` in the model's taxonomy.
    tissue : the prompts' tissue word.
    notes : what the user should know (classes defaulted, annotations outside, ...).
    """

    stem: str
    source: str
    region_level0: tuple[int, int, int, int]
    slide_mpp: float
    mpp: float
    size_hw: tuple[int, int]
    canvas_hw: tuple[int, int]
    xy: np.ndarray
    classes: np.ndarray
    tissue: str | None
    notes: tuple[str, ...]

    @property
    def scale(self) -> float:
        """Level-0 px per canvas px."""
        return self.mpp / self.slide_mpp

    def placement(self, y0: int = 0, x0: int = 0) -> SlidePlacement:
        """Canvas px -> level-0 px of the source slide, for a crop whose corner is canvas (y0, x0)."""
        x, y = self.region_level0[:2]
        return SlidePlacement(x0=x + x0 * self.scale, y0=y + y0 * self.scale, scale=self.scale)


RESAMPLE_BLOCK = 1024  # canvas px of one layout drawn from the layout model (bounded memory)


def _layout_source(layouts: str, table, slide: str) -> str:
    from .layouts_for_slide import LAYOUT_SOURCES

    if layouts not in LAYOUT_SOURCES:
        raise CosynthError(f"unknown --layouts {layouts!r} (valid: {', '.join(LAYOUT_SOURCES)})")
    has_nuclei = table is not None and len(table) > 0
    if layouts == "annotations" and not has_nuclei:
        raise CosynthError(f"--layouts annotations: slide {slide} has no nuclei annotations (give --annotations FILE "
                           "or use --layouts resample)")
    if layouts == "auto":
        return "annotations" if has_nuclei else "resample"
    return layouts


def resampled_points(tissue_mask, box: tuple[int, int, int, int], scale: float, canvas_mpp: float,
                     size_hw: tuple[int, int], taxonomy: Taxonomy, *, class_map: dict[str, str] | None,
                     layout_model: str | Path | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (x, y canvas px) and classes drawn from a layout model over the region's tissue.

    ``box``: the region (x, y, w, h) in level-0 px; ``scale``: level-0 px per canvas px;
    ``canvas_mpp``: the canvas's resolution. The region is drawn in blocks of RESAMPLE_BLOCK canvas
    px (each one layout of the model over the same physical area at the model's own resolution,
    scaled to the canvas), and points on glass (outside the slide's tissue mask) are dropped, so
    the region's nuclei follow its tissue.
    """
    from ..layouts.point_process import load_layout_model, sample_layout
    from ..taxonomy import class_mapping
    from .layouts_for_slide import default_layout_model_path

    model = load_layout_model(layout_model or default_layout_model_path())
    lut = class_mapping(model.taxonomy, taxonomy, class_map)
    ratio = canvas_mpp / model.mpp if model.mpp else 1.0  # layout-model px per canvas px
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x2E61]))
    h, w = size_hw
    xy_parts, class_parts = [np.zeros((0, 2))], [np.zeros(0, np.int64)]
    for y0 in range(0, h, RESAMPLE_BLOCK):
        for x0 in range(0, w, RESAMPLE_BLOCK):
            bh, bw = min(RESAMPLE_BLOCK, h - y0), min(RESAMPLE_BLOCK, w - x0)
            drawn = sample_layout(model, (max(1, round(bh * ratio)), max(1, round(bw * ratio))), rng)
            xy = drawn.xy_tile / ratio + [x0, y0]
            inside = (xy[:, 0] < x0 + bw) & (xy[:, 1] < y0 + bh)
            xy_parts.append(xy[inside])
            class_parts.append(lut[drawn.classes[inside]].astype(np.int64))
    xy, classes = np.concatenate(xy_parts), np.concatenate(class_parts)
    s = tissue_mask.scale_to_level0
    mask = tissue_mask.mask
    r0, c0 = int(box[1] / s), int(box[0] / s)
    r1, c1 = int(math.ceil((box[1] + box[3]) / s)), int(math.ceil((box[0] + box[2]) / s))
    if not mask[r0:r1, c0:c1].any():
        return xy, classes  # a region given where no tissue was detected: draw over all of it
    rows = np.clip(((box[1] + xy[:, 1] * scale) / s).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(((box[0] + xy[:, 0] * scale) / s).astype(int), 0, mask.shape[1] - 1)
    on_tissue = mask[rows, cols]
    return xy[on_tissue], classes[on_tissue]


def _tissue_box(plan, slide: str) -> tuple[int, int, int, int]:
    """(x, y, w, h) level-0 bounding box of the slide's tissue mask; CosynthError when it has none."""
    mask = plan.tissue_mask
    if not mask.mask.any():
        raise CosynthError(f"no tissue found in slide {slide} (tissue threshold {mask.threshold:.3f}); "
                           "give the region to synthesise with --region X Y W H")
    rows = np.flatnonzero(mask.mask.any(axis=1))
    cols = np.flatnonzero(mask.mask.any(axis=0))
    s = mask.scale_to_level0
    w0, h0 = plan.reader.dimensions
    x0, y0 = int(cols[0] * s), int(rows[0] * s)
    x1, y1 = min(w0, int(math.ceil((cols[-1] + 1) * s))), min(h0, int(math.ceil((rows[-1] + 1) * s)))
    return x0, y0, x1 - x0, y1 - y0


def _check_region(region: tuple[int, int, int, int], dims: tuple[int, int], slide: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in region)
    except (TypeError, ValueError):
        raise CosynthError(f"--region must be four integers X Y W H (level-0 px), got {region!r}") from None
    if w <= 0 or h <= 0:
        raise CosynthError(f"--region {x} {y} {w} {h}: width and height must be positive (level-0 px)")
    sw, sh = dims
    if x < 0 or y < 0 or x + w > sw or y + h > sh:
        raise CosynthError(f"--region {x} {y} {w} {h} is not inside slide {slide} ({sw}x{sh} level-0 px)")
    return x, y, w, h


def plan_region(
    slide: str | Path,
    *,
    taxonomy: Taxonomy,
    model_mpp: float,
    window: int,
    cell: int,
    annotations: str | Path | None = None,
    region: tuple[int, int, int, int] | None = None,
    slide_mpp: float | None = None,
    tissue: str | None = None,
    class_map: dict[str, str] | None = None,
    default_class: str | None = None,
    unknown_class: bool = False,
    layouts: str = "auto",
    layout_model: str | Path | None = None,
    seed: int = 0,
) -> RegionPlan:
    """Decide the region, its canvas and its points (see :class:`RegionPlan`).

    ``region`` None: the bounding box of the slide's tissue. Unclassified nuclei (MoNuSeg) take
    ``default_class``; without it they stay unclassified (``records.UNCLASSIFIED``) for a model
    with an unknown class (``unknown_class``), else take the model's class "other" when it has
    one (said in the notes).

    ``layouts``: where the points come from: ``annotations`` (the slide's nuclei), ``resample``
    (drawn from a layout model, ``layout_model`` or the bundled one, over the region's tissue:
    :func:`resampled_points`), or ``auto`` (annotations when the slide has some, else resample).

    Raises
    ------
    CosynthError
        Unreadable slide or annotations, no mpp, a region outside the slide or of zero size, a
        slide without tissue (without ``region``), an unmapped class.
    """
    with plan_slide(slide, annotations, mpp=model_mpp, tile_size=window, min_tissue=0.0, slide_mpp=slide_mpp,
                    tissue=tissue, pad=WHITE) as plan:
        reader = plan.reader
        box = _check_region(region, reader.dimensions, str(slide)) if region is not None else _tissue_box(plan, str(slide))
        scale = model_mpp / reader.mpp
        size_hw = (max(1, int(round(box[3] / scale))), max(1, int(round(box[2] / scale))))
        canvas_hw = tuple(max(window, math.ceil(v / cell) * cell) for v in size_hw)
        notes = list(plan.warnings)
        table = plan.annotations
        xy, classes = np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
        source = _layout_source(layouts, table, str(slide))
        if source == "resample":
            xy, classes = resampled_points(plan.tissue_mask, box, scale, float(model_mpp), size_hw, taxonomy,
                                           class_map=class_map, layout_model=layout_model, seed=seed)
            notes.append(f"no annotated nuclei used: {len(classes)} points resampled from the layout model over the "
                         "region's tissue")
        elif table is not None and len(table):
            idx = table.query_nuclei((box[0], box[1], box[0] + box[2], box[1] + box[3]))
            xy, kept = tile_points(table, idx, box[:2], scale, size_hw)
            names = table.classes[kept]
            unclassified = np.array([is_unclassified(str(n)) for n in names], dtype=bool)
            keep_unclassified = unknown_class and default_class is None
            if default_class is None and unclassified.any() and not keep_unclassified:
                names_lower = [n.lower() for n in taxonomy.names]
                default_class = "other" if "other" in names_lower else taxonomy.names[0]
                notes.append(f"{int(unclassified.sum())} nuclei without a class were given class {default_class!r} "
                             "(--default-class to choose another)")
            lookup = class_lookup(table, taxonomy, with_default_class(class_map, default_class),
                                  unclassified=keep_unclassified)
            classes = np.array([lookup[str(n)] for n in names], dtype=np.int64)
        tissue_word = tissue
        if tissue_word is None and table is not None and len(table.regions):
            tissue_word = table.tissue_at((box[0], box[1], box[0] + box[2], box[1] + box[3]))
        return RegionPlan(stem=safe_stem(reader.path), source=str(reader.path), region_level0=box,
                          slide_mpp=float(reader.mpp), mpp=float(model_mpp), size_hw=size_hw,
                          canvas_hw=canvas_hw, xy=np.asarray(xy, dtype=np.float64).reshape(-1, 2), classes=classes,
                          tissue=tissue_word, notes=tuple(notes))
