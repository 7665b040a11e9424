"""Where training tiles come from: a labelled tile dataset (any reader) or annotated slides.

Both give a :class:`TrainingTiles`: the tiles to train on (in one taxonomy), the held-out tiles
and the source images they came from, the data's resolution and a summary stored in the
checkpoint.

Held-out sources are whole source images, never single tiles, so validation tiles share no
pixels with training tiles: for a tile dataset the source image is the tile name without its
trailing ``_<index>`` (``train_10_003`` -> ``train_10``); for slides it is the slide's file stem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CosynthError, require_dir
from ..records import LabelledTile
from ..taxonomy import Taxonomy
from .dataset import source_image_of


@dataclass
class TrainingTiles:
    """Tiles to train on, held-out tiles and their sources, the resolution, a checkpoint summary."""

    tiles: list[LabelledTile]
    held_out: list[str]
    mpp: float
    summary: dict = field(default_factory=dict)
    validation: list[LabelledTile] = field(default_factory=list)

    @property
    def taxonomy(self) -> Taxonomy:
        return self.tiles[0].taxonomy


def _check_holdout(holdout: set[str], held: set[str], where: str) -> None:
    if holdout - held:
        raise CosynthError(f"--holdout-images: no tiles from {sorted(holdout - held)} in {where}")


def data_name(path: str | Path) -> str:
    """How a model records a data directory or file: its last two path parts (``consep/train``),
    a name that says which data it was, never where it lay on a machine."""
    parts = Path(path).resolve().parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else Path(path).name


def _own_taxonomy(table) -> Taxonomy:
    """The smallest built-in set holding the table's class names, else a set of those names."""
    from ..pipeline.planning import infer_taxonomy

    try:
        return infer_taxonomy(table)
    except CosynthError:
        return Taxonomy.from_names("annotations", sorted(table.class_names()))


def tiles_from_dataset(
    path: str | Path,
    fmt: str,
    *,
    taxonomy: Taxonomy | None = None,
    class_map: dict[str, str] | None = None,
    holdout: Sequence[str] = (),
    mpp: float | None = None,
    all_held_out_here: bool = True,
) -> TrainingTiles:
    """Every tile of a dataset directory except those of the held-out source images.

    ``mpp`` is the data's resolution when the reader does not record it; a dataset whose tiles
    state no resolution, or several, needs it. ``all_held_out_here``: every ``holdout`` image
    must be in this dataset (False when several sources share one hold-out list).
    """
    from ..exporters import read_dataset

    data = require_dir(path, "--data directory")
    wanted = set(holdout)
    tiles, validation, held, mpps = [], [], set(), set()
    for tile in read_dataset(data, fmt, taxonomy=taxonomy, class_map=class_map):
        source = source_image_of(tile.provenance.name)
        if source in wanted:
            held.add(source)
            validation.append(tile)
            continue
        tiles.append(tile)
        mpps.add(tile.provenance.mpp)
    if all_held_out_here:
        _check_holdout(wanted, held, str(data))
    if not tiles:
        raise CosynthError(f"no training tiles read from {data} (format {fmt})")
    if mpp is None:
        known = {m for m in mpps if m is not None}
        if len(known) != 1:
            raise CosynthError(f"the tiles in {data} do not state one resolution ({sorted(known) or 'none'}); pass --mpp")
        mpp = known.pop()
    summary = {"data": data_name(data), "format": fmt, "holdout_images": sorted(held), "mpp": mpp}
    return TrainingTiles(tiles=tiles, held_out=sorted(held), mpp=float(mpp), summary=summary, validation=validation)


def tiles_from_slides(
    slides: Sequence[str | Path],
    annotations: Sequence[str | Path] | None = None,
    *,
    mpp: float,
    tile_size: int,
    taxonomy: Taxonomy | None = None,
    class_map: dict[str, str] | None = None,
    holdout: Sequence[str] = (),
    tissue: str | None = None,
    min_nuclei: int = 1,
    all_held_out_here: bool = True,
    own_classes: bool = False,
    **plan_options,
) -> TrainingTiles:
    """The annotated tissue tiles of whole slides, read at ``mpp`` in ``tile_size`` px tiles.

    Each slide needs nuclei outlines: ``annotations[i]`` for ``slides[i]``, or a sidecar file
    (``x.geojson`` next to ``x.svs``). Tiles with fewer than ``min_nuclei`` annotated nuclei are
    skipped: on a slide, unannotated tissue usually means "not annotated", not "no nuclei", and
    training on it would teach the model to draw nuclei the label does not show. The taxonomy is
    ``taxonomy`` or the smallest built-in set holding the first slide's class names; every slide's
    names are mapped into it (unknown names are an error). ``plan_options`` go to
    :func:`~wsi_cosynth.pipeline.planning.plan_slide` (stride, min_tissue, slide_mpp, ...).
    ``all_held_out_here`` as in :func:`tiles_from_dataset`. ``own_classes``: without
    ``taxonomy``, a first slide whose class names no built-in set holds keeps its own names (the
    caller maps them by name later) instead of being an error.
    """
    from ..pipeline.planning import class_lookup, infer_taxonomy, iter_slide_tiles, labelled_tile, plan_slide, safe_stem

    if annotations and len(annotations) != len(slides):
        raise CosynthError(f"{len(slides)} slide(s) but {len(annotations)} annotation file(s): give one per slide, in order")
    wanted = {safe_stem(h) for h in holdout}  # slide stems are kept as safe_stem spells them
    tiles: list[LabelledTile] = []
    validation: list[LabelledTile] = []
    held: set[str] = set()
    per_slide: list[dict] = []
    tax = taxonomy
    for i, slide in enumerate(slides):
        is_held_out = safe_stem(slide) in wanted
        with plan_slide(slide, annotations[i] if annotations else None, mpp=mpp, tile_size=tile_size,
                        tissue=tissue, **plan_options) as plan:
            table = plan.annotations
            if table is None or not len(table):
                raise CosynthError(f"slide {slide}: no nuclei annotations found (training needs outlines: put "
                                   f"{Path(slide).with_suffix('.geojson').name} next to it or pass --annotations)")
            if table.point_only:
                raise CosynthError(f"annotations {table.source} hold only points: training needs nuclei outlines")
            if tax is None:
                tax = _own_taxonomy(table) if own_classes else infer_taxonomy(table)
            lookup = class_lookup(table, tax, class_map)
            kept = skipped = 0
            for tile in iter_slide_tiles(plan):
                labelled = labelled_tile(plan, tile, tax, lookup)
                if labelled.n_nuclei < min_nuclei:
                    skipped += 1
                    continue
                (validation if is_held_out else tiles).append(labelled)
                kept += 1
            if is_held_out:
                held.add(plan.stem)
            per_slide.append({"slide": Path(slide).name, "annotations": Path(str(table.source)).name, "tiles": kept,
                              "skipped_tiles_with_few_nuclei": skipped, "held_out": is_held_out})
    if all_held_out_here:
        _check_holdout(wanted, held, "the slides")
    if not tiles:
        raise CosynthError(f"no tile of the slides has >= {min_nuclei} annotated nuclei at {tile_size} px x {mpp:g} um/px")
    summary = {"format": "slides", "slides": per_slide, "holdout_images": sorted(held), "mpp": mpp,
               "min_nuclei": min_nuclei}
    return TrainingTiles(tiles=tiles, held_out=sorted(held), mpp=float(mpp), summary=summary, validation=validation)
