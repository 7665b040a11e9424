"""The files of a cohort export, written from the cohort's stored tiles.

One complete dataset of the format per split (``out/train``, ``out/val``, ``out/test``; with
``tiles.csv``, every tile's slide, patient, split and level-0 position, and ``preview.png`` for
synthetic tiles), ``cohort.csv`` (one row per slide: slide, patient, split, tiles, nuclei,
status) and ``cohort.json`` (tiles and nuclei per split and per class). Everything is written
under a temporary name and renamed onto ``out`` when complete.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..records import LabelledTile
from ..taxonomy import Taxonomy, with_default_class
from .cohort_csv import CohortRow
from .cohort_store import SlideStore
from .cohort_tasks import OK, REAL_TILES_PER_TASK, SlideJob, SlidePlanResult
from .options import ExportOptions
from .splits import SPLITS
from .synthetic import PREVIEW_NAME

CSV_NAME = "cohort.csv"
SUMMARY_NAME = "cohort.json"
TILES_INDEX = "tiles.csv"
CSV_COLUMNS = ("slide", "patient", "split", "tiles", "nuclei", "status")
TILES_COLUMNS = ("name", "slide", "patient", "split", "x_level0", "y_level0", "mpp", "tissue", "nuclei")
PREVIEW_TILES = 12


@dataclass(frozen=True)
class SlideOutcome:
    """One row of ``cohort.csv``: ``slide`` as written in the cohort CSV, ``status`` ``ok`` or
    ``failed: <reason>``."""

    slide: str
    patient: str
    split: str
    tiles: int
    nuclei: int
    status: str


@dataclass(frozen=True)
class CohortSummary:
    """What a cohort export wrote: per slide, per split (tiles, nuclei, nuclei per class).
    ``work_dir``: the work directory kept when slides failed (a rerun after fixing them redoes
    only those), else None."""

    out: Path
    fmt: str
    taxonomy: str
    slides: tuple[SlideOutcome, ...]
    splits: dict[str, dict[str, Any]]
    warnings: tuple[str, ...] = field(default=())
    work_dir: Path | None = None

    @property
    def failed(self) -> tuple[SlideOutcome, ...]:
        return tuple(s for s in self.slides if s.status != OK)

    @property
    def n_tiles(self) -> int:
        return sum(s.tiles for s in self.slides)

    @property
    def n_nuclei(self) -> int:
        return sum(s.nuclei for s in self.slides)


@dataclass
class CohortSlide:
    """One slide of the run: its CSV row, job, store, split and (after planning) its plan result."""

    row: CohortRow
    job: SlideJob
    store: SlideStore
    split: str
    plan: SlidePlanResult | None = None


def n_parts(s: CohortSlide, options: ExportOptions, synthetic: bool) -> int:
    """How many task results (stored parts) a planned slide's tiles come in."""
    per_part = options.batch_size if synthetic else REAL_TILES_PER_TASK
    return -(-s.plan.n_tiles // per_part)


def write_cohort_output(out: Path, slides: list[CohortSlide], taxonomy: Taxonomy, options: ExportOptions,
                        fractions: tuple[float, float, float], warnings: list[str]) -> CohortSummary:
    """Write the split datasets, cohort.csv and cohort.json from the stored tiles, atomically.

    Parameters
    ----------
    out : the output directory (replaced only once everything is written).
    slides : every slide of the cohort in CSV order, planned (failed ones included: cohort.csv lists them).
    taxonomy : the cohort's class set; tiles in another (real tiles' own class names) are mapped into it by name.
    options : the export options (format, writer options, class map, progress).
    fractions : the split fractions (a split with fraction 0 and no fixed patient gets no folder).
    warnings : notes to return with the slides' own.
    """
    from tqdm import tqdm

    from ..exporters import open_writer
    from ..exporters._common import ClassRemapper
    from ..render import preview, save_png

    synthetic = options.source == "synthetic"
    # Real tiles are stored in their slide's own class names: mapped by name into the cohort's set here.
    remap = ClassRemapper(taxonomy, with_default_class(options.class_map, options.default_class))
    active = [k for k, f in zip(SPLITS, fractions) if f > 0 or any(s.split == k for s in slides)]
    tiles_of = {id(s): Counter() for s in slides}
    per_split: dict[str, dict[str, Any]] = {}
    notes = list(warnings)
    for s in slides:
        notes += [f"{s.row.slide}: {n}" for n in s.plan.notes]
    bar = tqdm(total=sum(s.plan.n_tiles for s in slides if s.plan.ok), disable=not options.progress, desc="write",
               unit="tile", dynamic_ncols=True)
    writer_options = dict(options.writer_options)
    written = taxonomy.key
    try:
        with atomic_path(out) as tmp:
            tmp.mkdir()
            for split in active:
                members = [s for s in slides if s.split == split and s.plan.ok]
                classes: Counter = Counter()
                rows, shown = [], []
                with open_writer(options.format, tmp / split, taxonomy, **writer_options) as writer:
                    for s in members:
                        for index in range(n_parts(s, options, synthetic)):
                            for tile in s.store.load_part(index):
                                tile = replace(remap(tile), provenance=replace(tile.provenance, patient=s.row.patient,
                                                                              split=split))
                                writer.add(tile)
                                tiles_of[id(s)].update(tiles=1, nuclei=tile.n_nuclei)
                                classes.update(taxonomy.names[int(c) - 1] for c in tile.classes)
                                rows.append(_tile_row(tile, s))
                                if synthetic and len(shown) < PREVIEW_TILES:
                                    shown.append(tile)
                                bar.update(1)
                notes += [n for n in writer.notes if n not in notes]
                written = writer.taxonomy.key  # the format's own ids where the classes map into them
                _write_csv(tmp / split / TILES_INDEX, TILES_COLUMNS, rows)
                if shown:
                    save_png(tmp / split / PREVIEW_NAME, preview(shown))
                per_split[split] = {"patients": len({s.row.patient for s in members}), "slides": len(members),
                                    "tiles": len(rows), "nuclei": sum(classes.values()),
                                    "classes": {name: classes[name] for name in taxonomy.names}}
            outcomes = tuple(SlideOutcome(slide=s.row.slide, patient=s.row.patient, split=s.split,
                                          tiles=tiles_of[id(s)]["tiles"], nuclei=tiles_of[id(s)]["nuclei"],
                                          status=s.plan.status) for s in slides)
            _write_csv(tmp / CSV_NAME, CSV_COLUMNS, [o.__dict__ for o in outcomes])
            summary = CohortSummary(out=out, fmt=options.format, taxonomy=written, slides=outcomes,
                                    splits=per_split, warnings=tuple(notes))
            (tmp / SUMMARY_NAME).write_text(json.dumps(_summary_record(summary, options, fractions), indent=1) + "\n")
    finally:
        bar.close()
    return summary


def _tile_row(tile: LabelledTile, s: CohortSlide) -> dict[str, Any]:
    p = tile.provenance
    return {"name": p.name, "slide": s.row.slide, "patient": p.patient, "split": p.split, "x_level0": _num(p.x_slide),
            "y_level0": _num(p.y_slide), "mpp": p.mpp, "tissue": p.tissue or "", "nuclei": tile.n_nuclei}


def _num(v: float | None) -> int | float | str:
    if v is None:
        return ""
    return int(v) if float(v).is_integer() else v


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())


def _summary_record(summary: CohortSummary, options: ExportOptions, fractions: tuple[float, float, float]) -> dict:
    per_class = {name: {split: v["classes"][name] for split, v in summary.splits.items()}
                 for name in next(iter(summary.splits.values()))["classes"]} if summary.splits else {}
    return {
        "source": options.source, "format": summary.fmt, "taxonomy": summary.taxonomy, "seed": options.seed,
        "split_fractions": dict(zip(SPLITS, fractions)),
        "slides": {"total": len(summary.slides), "ok": len(summary.slides) - len(summary.failed),
                   "failed": len(summary.failed)},
        "tiles": summary.n_tiles, "nuclei": summary.n_nuclei,
        "splits": summary.splits,
        "classes": per_class,
    }
