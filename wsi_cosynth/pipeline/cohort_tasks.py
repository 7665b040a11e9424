"""What the tasks of a cohort export do, wherever they run (in-process or on a Dask worker).

Three kinds of task, each a plain function of small picklable arguments:

- :func:`plan_slide_task` (synthetic source): open one slide and its annotations (or detect its
  nuclei first when it has none: ``SlideJob.detections``), find its
  tissue and tile grid, choose its layouts and read the colour of the real tile behind each
  (``colour_match``, as a single-slide export does), and return them in a :class:`SlidePlanResult`.
- :func:`real_part_task` (real source): read and label one run of ``REAL_TILES_PER_TASK`` of a
  slide's tiles, as a single-slide real export does; the slide's first task also plans it and
  returns what the cohort needs to know (tile count, class names, notes). Tiles are labelled in
  the slide's own class names (:func:`local_taxonomy`) and mapped by name into the cohort's
  taxonomy when the datasets are written, which is known only once every slide is planned.
  A worker keeps its last slide plan open, so the runs of one slide plan it once.
- synthesis tasks are :func:`~.worker.synthesize_batch` itself, on batches of the slide's layouts.

A slide that cannot be used (missing, corrupt, no tissue, no annotations for real tiles, an
unknown class) gives a failed result with the one-line reason instead of an exception, so one
bad slide never stops the others.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

from ..annotations import AnnotationTable
from ..annotations.labels import require_outlines
from ..colour import ColourStats
from ..errors import CosynthError, require_file
from ..records import LabelledTile, Layout
from ..taxonomy import Taxonomy, normalise_name, with_default_class
from .detected import detect_for_export
from .layouts_for_slide import choose_layouts
from .options import REAL_DEFAULT_MPP, REAL_DEFAULT_TILE_SIZE, ExportOptions
from .planning import SlidePlan, class_lookup, iter_slide_tiles, labelled_tile, plan_slide
from .slide_look import read_slide_look
from .synthetic import ModelInfo

OK = "ok"
# Real tiles read and labelled by one task: ~64 x (256^2 x 7 bytes + outlines) ~ 30 MiB of result.
REAL_TILES_PER_TASK = 64


@dataclass(frozen=True)
class SlideJob:
    """One slide as its tasks see it: files, its name in the cohort (``stem``, the prefix of its
    tile names), its seed, and the export options with its own tissue and resolution."""

    stem: str
    slide: str
    annotations: str | None
    options: ExportOptions
    seed: int
    detections: str | None = None  # an unannotated slide's detections go here (synthetic source)


@dataclass(frozen=True)
class SlidePlanResult:
    """What planning found. ``status`` is ``"ok"`` or ``"failed: <reason>"``; ``n_tiles``: tiles
    the slide gives (synthetic: layouts x per_layout); ``classes``: annotation class names (real);
    ``layouts``: the layouts to synthesise and ``colours`` their colour references by layout name
    (synthetic); ``notes``: warnings to report."""

    status: str
    n_tiles: int = 0
    classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    layouts: tuple[Layout, ...] = ()
    colours: dict[str, ColourStats] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class RealPart:
    """The result of a real-tile task: the tiles, the plan when the task was the slide's first,
    or a failed plan (and no tiles) when the slide could not be read."""

    tiles: tuple[LabelledTile, ...] = ()
    plan: SlidePlanResult | None = None


def failed(reason: str) -> SlidePlanResult:
    """A failed plan whose status carries ``reason`` on one line."""
    return SlidePlanResult(status=f"failed: {' '.join(str(reason).split())}")


def real_grid(options: ExportOptions) -> tuple[float, int]:
    """(mpp, tile size) of real tiles: the options' or 0.5 um/px and 256 px."""
    return (float(options.mpp if options.mpp is not None else REAL_DEFAULT_MPP),
            int(options.tile_size if options.tile_size is not None else REAL_DEFAULT_TILE_SIZE))


def _open_plan(job: SlideJob, mpp: float, tile_size: int) -> SlidePlan:
    require_file(job.slide, "slide")
    plan = plan_slide(job.slide, job.annotations, **job.options.plan_kwargs(mpp=mpp, tile_size=tile_size))
    plan.stem = job.stem  # tile names are unique across the cohort's slides
    return plan


def plan_slide_task(job: SlideJob, model: ModelInfo) -> SlidePlanResult:
    """Plan one slide of a synthetic cohort: its layouts in the model's classes (see the module docstring)."""
    try:
        return _plan_synthetic(job, model)
    except CosynthError as exc:
        return failed(str(exc))
    except OSError as exc:  # e.g. a slide on a disconnected share: this slide fails, not the cohort
        return failed(f"{job.slide}: {exc.strerror or exc}")


def _plan_synthetic(job: SlideJob, model: ModelInfo) -> SlidePlanResult:
    o = job.options
    mpp = float(o.mpp if o.mpp is not None else (model.mpp or REAL_DEFAULT_MPP))
    detected_note = ()
    if job.detections is not None:
        require_file(job.slide, "slide")
        Path(job.detections).parent.mkdir(parents=True, exist_ok=True)
        detected = detect_for_export(job.slide, job.detections, o.detector, slide_mpp=o.slide_mpp,
                                     min_tissue=o.min_tissue, progress=False)
        job, detected_note = replace(job, annotations=str(detected.path)), (f"{job.stem}: {detected.note}",)
    with _open_plan(job, mpp, model.tile_size) as plan:
        layouts, notes = choose_layouts(plan, model.taxonomy, layouts=o.layouts, layout_model=o.layout_model,
                                        class_map=o.class_map, default_class=o.default_class,
                                        max_tiles=o.max_tiles, seed=job.seed, tissue=o.tissue,
                                        unknown_class=model.unknown_class)
        look = read_slide_look(plan, layouts, o.colour_match, preview=0)
    return SlidePlanResult(status=OK, n_tiles=len(layouts) * o.per_layout, notes=(*detected_note, *notes),
                           layouts=tuple(layouts), colours=look.colours)


def _nuclei(job: SlideJob, plan: SlidePlan) -> AnnotationTable:
    table = plan.annotations
    if table is None or not len(table):
        raise CosynthError(f"slide {job.slide} has no nuclei annotations (give an annotations column or put a "
                           "sidecar file with the slide's name next to it)")
    return table


def _plan_real(job: SlideJob, plan: SlidePlan, taxonomy: Taxonomy | None) -> SlidePlanResult:
    table = _nuclei(job, plan)
    require_outlines(table)
    if taxonomy is not None:  # the user's class set: an unmapped class fails this slide now
        class_lookup(table, taxonomy, with_default_class(job.options.class_map, job.options.default_class))
    return SlidePlanResult(status=OK, n_tiles=len(plan.grid), classes=tuple(sorted(map(str, table.class_names()))),
                           notes=tuple(plan.warnings))


def local_taxonomy(table: AnnotationTable) -> tuple[Taxonomy, dict[str, int]]:
    """A class set of the annotation table's own names (one per normalised name, sorted) and
    the id of every name in it."""
    by_key: dict[str, str] = {}
    for name in sorted(map(str, table.class_names())):
        by_key.setdefault(normalise_name(name), name)
    taxonomy = Taxonomy.from_names("slide-classes", list(by_key.values()))
    return taxonomy, {name: taxonomy.id_of(name) for name in map(str, table.class_names())}


# One open slide plan per worker thread: the runs of tiles of one slide usually follow each
# other, so a worker plans a slide once; memory stays one plan per thread whatever the cohort.
_PLANS = threading.local()


def _cached_plan(job: SlideJob) -> SlidePlan:
    held = getattr(_PLANS, "held", None)
    if held is not None and held[0] == job:
        return held[1]
    if held is not None:
        held[1].close()
        _PLANS.held = None
    plan = _open_plan(job, *real_grid(job.options))
    _PLANS.held = (job, plan)
    return plan


def release_plans() -> None:
    """Close the slide plan the calling thread keeps open (in-process runs, when done)."""
    held = getattr(_PLANS, "held", None)
    if held is not None:
        held[1].close()
        _PLANS.held = None


def real_part_task(job: SlideJob, index: int, taxonomy: Taxonomy | None, first: bool) -> RealPart:
    """Tiles ``index x REAL_TILES_PER_TASK`` onwards (grid order) of a slide, labelled in its own
    class names; ``first``: also plan the slide (checking its classes against ``taxonomy``, the
    user's class set, when given)."""
    try:
        plan = _cached_plan(job)
        planned = _plan_real(job, plan, taxonomy) if first else None
        local, lookup = local_taxonomy(_nuclei(job, plan))
        start = index * REAL_TILES_PER_TASK
        positions = islice(plan.positions(), start, start + REAL_TILES_PER_TASK)
        tiles = tuple(labelled_tile(plan, tile, local, lookup) for tile in iter_slide_tiles(plan, positions=positions))
        return RealPart(tiles=tiles, plan=planned)
    except CosynthError as exc:
        return RealPart(plan=failed(str(exc)))
    except OSError as exc:
        return RealPart(plan=failed(f"{job.slide}: {exc.strerror or exc}"))
