"""Training on several labelled sources at once: each source read in its own class set, its
classes mapped by NAME into the model's, its tiles' tissue words set, and the sources balanced.

A source is a tile dataset (``format`` a reader format: consep, pannuke, lizard, cellvit, ...),
a directory of annotated images (``format: slides``: every image in it with a sidecar
annotation file, e.g. MoNuSeg's ``x.tif`` + ``x.xml``), or a list of annotated slides. Its
tissue word is ``tissue`` or, per source image, a tissue table (a CSV with columns ``image`` and
``organ`` or ``tissue``, such as MoNuSeg's ``organs.csv``).

Classes: the model's taxonomy is the one given, or the sources' own when they all share one, or
else the first source's whose nuclei have classes. Each source class maps into it by name
(a source's class map, then the same name, then the built-in aliases). Nuclei without a class
("nucleus", "unclassified") become the model's unknown class when its config has
``model.unknown_class`` (the partial-label loss, diffusion/categorical.py), a ``default_class``
when one is given, and are an error otherwise; any other unmappable name is an error naming it.

Balance (``train.source_balance``): a batch example comes from source s with probability
proportional to sqrt(n_s) ("sqrt"), 1 ("equal") or n_s ("tiles"), n_s its training tiles, and
from a tile drawn uniformly within the source.

What a model records of its data (``model.json``) are names: a source's name, its directory as
``parent/name``, its format, images, tissues and class mapping; never a machine path.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import CosynthError, require_dir, require_file
from ..records import LabelledTile
from ..taxonomy import Taxonomy, is_unclassified, map_name, normalise_name, with_default_class
from .dataset import source_image_of
from .sources import TrainingTiles, data_name, tiles_from_dataset, tiles_from_slides

BALANCE_RULES: tuple[str, ...] = ("sqrt", "equal", "tiles")
SLIDES_FORMAT = "slides"  # a directory of images, each with a sidecar annotation file
TISSUE_COLUMNS: tuple[str, ...] = ("organ", "tissue")
UNKNOWN_CLASS_NAME = "(unknown class)"  # how the summary names the model's unknown class


@dataclass(frozen=True)
class SourceSpec:
    """One training source, as the command line or a sources YAML gives it.

    ``data``: a tile dataset directory (read with ``format``) or, with ``format`` "slides", a
    directory of annotated images; ``slides`` / ``annotations``: annotated slides (annotations in
    the slides' order, or sidecars). ``mpp``: a dataset's resolution when its reader records none;
    ``slide_mpp``: the images' resolution when their files record none.
    """

    name: str
    data: Path | None = None
    format: str = "consep"
    slides: tuple[Path, ...] = ()
    annotations: tuple[Path, ...] = ()
    tissue: str | None = None
    tissue_table: Path | None = None
    class_map: dict[str, str] | None = None
    mpp: float | None = None
    slide_mpp: float | None = None
    min_nuclei: int = 1

    @property
    def reads_slides(self) -> bool:
        return bool(self.slides) or self.format == SLIDES_FORMAT


@dataclass
class MixedTiles:
    """Tiles of every source for one model: the tiles (each in its source's class set), the
    id lookups into ``taxonomy`` per class set, each tile's drawing weight, the held-out tiles,
    the resolution and the summary a checkpoint records."""

    tiles: list[LabelledTile]
    taxonomy: Taxonomy
    class_luts: dict[tuple[str, ...], np.ndarray]
    weights: np.ndarray
    validation: list[LabelledTile]
    held_out: list[str]
    mpp: float
    summary: dict = field(default_factory=dict)


def source_probabilities(n_tiles: Sequence[int], rule: str) -> np.ndarray:
    """(S,) probability of drawing from each source: proportional to sqrt(n), 1 or n."""
    n = np.asarray(n_tiles, dtype=np.float64)
    if rule not in BALANCE_RULES:
        raise CosynthError(f"unknown source balance {rule!r} (valid: {', '.join(BALANCE_RULES)})")
    if n.size == 0 or (n <= 0).any():
        raise CosynthError(f"every source needs training tiles, got tile counts {n.astype(int).tolist()}")
    raw = {"sqrt": np.sqrt(n), "equal": np.ones_like(n), "tiles": n}[rule]
    return raw / raw.sum()


def image_key(name: str) -> str:
    """A source image's name as tables and tiles are matched: ``safe_stem`` spelling, lower case."""
    from ..pipeline.planning import safe_stem

    return safe_stem(name).lower()


def read_tissue_table(path: str | Path) -> dict[str, str]:
    """Image -> tissue word from a CSV with columns ``image`` and ``organ`` (or ``tissue``);
    keys spelt by :func:`image_key`. CosynthError naming the file and the problem."""
    p = require_file(path, "tissue table")
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
            header = [h.strip().lower() for h in (rows[0].keys() if rows else [])]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CosynthError(f"tissue table {p} is not readable CSV text ({type(exc).__name__}: {exc})") from None
    column = next((c for c in TISSUE_COLUMNS if c in header), None)
    if not rows or "image" not in header or column is None:
        raise CosynthError(f"tissue table {p}: expected a CSV with columns image and {' or '.join(TISSUE_COLUMNS)} "
                           f"and one row per image, found columns {header or 'none'}")
    table: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        values = {str(k).strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
        image, tissue = values.get("image", ""), values.get(column, "")
        if not image or not tissue:
            raise CosynthError(f"tissue table {p}, line {line}: empty image or {column}")
        key = image_key(image)
        if table.get(key, tissue) != tissue:
            raise CosynthError(f"tissue table {p}, line {line}: image {image!r} is listed twice with different tissues")
        table[key] = tissue.lower()
    return table


def _image_of(tile: LabelledTile) -> str:
    """The source image of a tile: its slide's file stem, or its dataset name without the tile index."""
    prov = tile.provenance
    if prov.x_slide is not None and prov.source:
        return image_key(Path(prov.source).name)
    return image_key(source_image_of(prov.name))


def _with_tissues(tiles: list[LabelledTile], spec: SourceSpec, table: dict[str, str] | None) -> list[LabelledTile]:
    """The tiles with their tissue word: the table's for their image, else the source's."""
    out = []
    for tile in tiles:
        tissue = table.get(_image_of(tile)) if table is not None else None
        tissue = tissue or spec.tissue or tile.provenance.tissue
        if table is not None and tissue is None:
            raise CosynthError(f"source {spec.name!r}: image {_image_of(tile)!r} is not in tissue table "
                               f"{spec.tissue_table} and the source has no tissue of its own")
        out.append(replace(tile, provenance=replace(tile.provenance, tissue=tissue)))
    return out


def slides_in(directory: str | Path) -> list[Path]:
    """The images of a directory that have a sidecar annotation file, sorted by name."""
    from ..annotations import SIDECAR_SUFFIXES, find_sidecar

    root = require_dir(directory, "--data directory")
    found = [p for p in sorted(root.iterdir())
             if p.is_file() and p.suffix.lower() not in SIDECAR_SUFFIXES and not p.name.startswith(".")
             and p.suffix.lower() not in (".csv", ".txt", ".md", ".yaml", ".yml") and find_sidecar(p) is not None]
    if not found:
        raise CosynthError(f"--data {root} (format {SLIDES_FORMAT}): no image with a sidecar annotation file "
                           f"(x.tif + x.xml, x.svs + x.geojson, ...)")
    return found


def _read_source(spec: SourceSpec, *, mpp: float | None, tile_size: int, holdout: Sequence[str]) -> TrainingTiles:
    """A source's tiles in its own class set (slides tiled at ``mpp``)."""
    if spec.reads_slides:
        slides = list(spec.slides) or slides_in(spec.data)  # type: ignore[arg-type]
        return tiles_from_slides(slides, list(spec.annotations) or None, mpp=float(mpp or 0.5), tile_size=tile_size,
                                 holdout=holdout, min_nuclei=spec.min_nuclei, all_held_out_here=False, own_classes=True,
                                 **({"slide_mpp": spec.slide_mpp} if spec.slide_mpp is not None else {}))
    if spec.data is None:
        raise CosynthError(f"source {spec.name!r}: give a data directory or slides")
    return tiles_from_dataset(spec.data, spec.format, holdout=holdout, mpp=spec.mpp if spec.mpp is not None else mpp,
                              all_held_out_here=False)


def _choose_taxonomy(read: list[TrainingTiles], given: Taxonomy | None) -> Taxonomy:
    if given is not None:
        return given
    sets = [r.taxonomy for r in read]
    if all(t.names == sets[0].names for t in sets):
        return sets[0]
    classified = [t for t in sets if not all(is_unclassified(n) for n in t.names)]
    return classified[0] if classified else sets[0]


def class_lut(source: Taxonomy, target: Taxonomy, class_map: dict[str, str] | None, *, unknown_class: bool,
              where: str) -> np.ndarray:
    """(K_source + 1,) int64: source ids -> ``target`` ids by name, 0 -> 0; a class without a
    class (``nucleus``, ``unclassified``) -> K_target + 1 when ``unknown_class``."""
    from ..models.denoiser import unknown_class_id

    same = {normalise_name(n) for n in target.names}
    lut = np.zeros(source.n_classes + 1, dtype=np.int64)
    for i, name in enumerate(source.names):
        key = normalise_name(name)
        if is_unclassified(name) and unknown_class and not (class_map and key in class_map) and key not in same:
            lut[i + 1] = unknown_class_id(target.n_classes)
            continue
        try:
            lut[i + 1] = map_name(name, target, class_map, where=where)
        except CosynthError:
            if not is_unclassified(name):
                raise
            raise CosynthError(
                f"{where}: nuclei have no class ({name!r}) and the model's classes ({', '.join(target.names)}) have no "
                "unknown class: use a config with model.unknown_class: true, or give them a class (--default-class NAME)"
            ) from None
    return lut


def load_sources(
    specs: Sequence[SourceSpec],
    *,
    tile_size: int,
    balance: str,
    unknown_class: bool,
    taxonomy: Taxonomy | None = None,
    mpp: float | None = None,
    holdout: Sequence[str] = (),
    default_class: str | None = None,
) -> MixedTiles:
    """Read every source, map its classes into one taxonomy and weight its tiles (module docstring).

    ``mpp``: the resolution of the model (default: the first tile dataset's, else 0.5 um/px);
    every tile dataset must be at it, slides are tiled at it. ``holdout``: source image names
    (of any source) whose tiles are kept for validation; a name found in no source is an error.
    """
    if not specs:
        raise CosynthError("no training source given (--data, --slide or --sources)")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise CosynthError(f"training sources need distinct names, got {names}")
    source_probabilities([1] * len(specs), balance)  # validates the rule before any reading
    order = sorted(range(len(specs)), key=lambda i: specs[i].reads_slides)  # datasets first: they fix the mpp
    read: list[TrainingTiles | None] = [None] * len(specs)
    for i in order:
        spec = specs[i]
        got = _read_source(spec, mpp=mpp, tile_size=tile_size, holdout=holdout)
        if mpp is None:
            mpp = got.mpp
        elif abs(got.mpp - float(mpp)) > 1e-6:
            raise CosynthError(f"source {spec.name!r} is at {got.mpp:g} um/px but the model is trained at {float(mpp):g} "
                               f"um/px: tile datasets are not resampled (give --mpp to match, or resample the data)")
        table = read_tissue_table(spec.tissue_table) if spec.tissue_table is not None else None
        read[i] = replace(got, tiles=_with_tissues(got.tiles, spec, table),
                          validation=_with_tissues(got.validation, spec, table))
    sources: list[TrainingTiles] = [r for r in read if r is not None]
    held = sorted({h for r in sources for h in r.held_out})
    found = {image_key(h) for h in held}
    missing = sorted(h for h in holdout if image_key(h) not in found)
    if missing:
        raise CosynthError(f"--holdout-images: no tiles from {missing} in any source")
    target = _choose_taxonomy(sources, taxonomy)
    luts: dict[tuple[str, ...], np.ndarray] = {}
    tiles: list[LabelledTile] = []
    validation: list[LabelledTile] = []
    weights: list[np.ndarray] = []
    probabilities = source_probabilities([len(r.tiles) for r in sources], balance)
    described = []
    for spec, got, p in zip(specs, sources, probabilities):
        where = f"source {spec.name!r}"
        class_map = with_default_class(spec.class_map, default_class)
        for tile_set in {tuple(t.taxonomy.names): t.taxonomy for t in got.tiles + got.validation}.values():
            lut = class_lut(tile_set, target, class_map, unknown_class=unknown_class, where=where)
            if tuple(tile_set.names) in luts and not np.array_equal(luts[tuple(tile_set.names)], lut):
                raise CosynthError(f"{where}: its classes {list(tile_set.names)} map differently from another source's "
                                   "same class set (give both the same class map)")
            luts[tuple(tile_set.names)] = lut
        tiles += got.tiles
        validation += got.validation
        weights.append(np.full(len(got.tiles), p / len(got.tiles)))
        described.append(_describe(spec, got, target, luts, float(p)))
    model_mpp = float(sources[0].mpp if mpp is None else mpp)  # every source was read at it
    summary = {"format": "sources", "balance": balance, "sources": described, "holdout_images": held,
               "mpp": model_mpp}
    if len(specs) == 1:  # one source: its own summary as before, plus its description
        summary = {**sources[0].summary, "sources": described, "balance": balance}
    return MixedTiles(tiles=tiles, taxonomy=target, class_luts=luts, weights=np.concatenate(weights),
                      validation=validation, held_out=held, mpp=model_mpp, summary=summary)


def _describe(spec: SourceSpec, got: TrainingTiles, target: Taxonomy, luts: dict, probability: float) -> dict:
    """A source as the checkpoint records it: names and counts, no machine paths."""
    mapping: dict[str, str] = {}
    for tax in {tuple(t.taxonomy.names): t.taxonomy for t in got.tiles}.values():
        lut = luts[tuple(tax.names)]
        for i, name in enumerate(tax.names):
            mapping[name] = target.names[lut[i + 1] - 1] if lut[i + 1] <= target.n_classes else UNKNOWN_CLASS_NAME
    tissues = Counter(str(t.provenance.tissue) for t in got.tiles)
    where = data_name(spec.data) if spec.data is not None else [p.name for p in spec.slides]
    return {"name": spec.name, "format": SLIDES_FORMAT if spec.reads_slides else spec.format, "data": where,
            "tiles": len(got.tiles), "images": len({_image_of(t) for t in got.tiles}), "held_out": got.held_out,
            "probability": round(probability, 4), "tissues": dict(sorted(tissues.items())), "classes": mapping}
