"""Cohort export: a study's slides into one dataset, a folder per split, split by patient.

``export_cohort("cohort.csv", "out/", options)`` reads the cohort CSV (:mod:`.cohort_csv`),
draws patient-level splits (:mod:`.splits`), and exports every slide as a single-slide export
would (same planning, layouts, sampling and labels); :mod:`.cohort_output` then writes a
dataset per split, ``cohort.csv`` and ``cohort.json``.

Work is done as tasks (:mod:`.execution`), in-process or on Dask: for synthetic tiles one
planning task per slide (its layouts), then one task per batch of layouts; for real tiles one
task per run of ``REAL_TILES_PER_TASK`` tiles of a slide, the first of which also plans it
(:mod:`.cohort_tasks`). Finished tasks are kept in the work directory (:mod:`.cohort_store`),
so an interrupted cohort resumes where it stopped and ends with the same files; the output
appears only when complete. A slide that cannot be used is listed as failed with its reason
and the others are exported. A synthetic export's slides without annotations have their nuclei
detected by their planning task (``options.detector``; kept beside the output in
``<out>.detections/``), as a single-slide export does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..atomic import output_lock
from ..errors import CosynthError
from ..records import LabelledTile
from ..taxonomy import Taxonomy, get_taxonomy, with_default_class
from .cohort_csv import CohortRow, read_cohort_csv
from .cohort_output import CohortSlide, CohortSummary, SlideOutcome, n_parts, write_cohort_output
from .cohort_store import CohortWorkDir, SlideStore, file_identity, slide_folder
from .detected import NO_DETECTOR, detections_unusable
from .cohort_tasks import (
    OK,
    REAL_TILES_PER_TASK,
    RealPart,
    SlideJob,
    SlidePlanResult,
    plan_slide_task,
    real_part_task,
    release_plans,
)
from .execution import Task, TaskRunner, sampling_concurrency
from .jobs import make_batches, plan_jobs
from .options import ExportOptions
from .planning import safe_stem, taxonomy_for_names
from .splits import PatientInfo, assign_splits, parse_fractions
from .synthetic import ModelInfo, device_kind, model_info, require_model_taxonomy
from .worker import DEFAULT_SAMPLING_THREADS, SamplingSpec, synthesize_batch


def export_cohort(cohort_csv: str | Path, out: str | Path, options: ExportOptions, *,
                  split: str | tuple[float, float, float] = "0.8,0.1,0.1",
                  skip_bad_slides: bool = False) -> CohortSummary:
    """Export every slide of ``cohort_csv`` into ``out`` (see the module docstring).

    Parameters
    ----------
    cohort_csv : the cohort CSV (:mod:`.cohort_csv`).
    out : the output directory; it must not exist or be empty unless ``options.overwrite``.
    options : every export option (the source, format, grid, classes, sampling, scale-out).
    split : (train, val, test) fractions of the patients, summing to 1.
    skip_bad_slides : the caller accepts failed slides: the work directory is removed at the
        end; otherwise it is kept when slides failed, so that a rerun after fixing them (with
        ``overwrite``) redoes only those.

    Returns
    -------
    CohortSummary; slides that failed are in ``summary.failed`` (the caller decides whether
    that is an error: the CLI exits 2 unless ``--skip-bad-slides``).

    Raises
    ------
    CosynthError
        A bad CSV, option or model; no slide could be exported; no taxonomy holds the classes.
    """
    fractions = parse_fractions(split)
    cohort = read_cohort_csv(cohort_csv)
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not options.overwrite)):
        raise CosynthError(f"output {out} exists and is not an empty directory (choose a new path or --overwrite)")
    model = model_info(options.model) if options.source == "synthetic" else None
    if model is not None:
        require_model_taxonomy(model, options.taxonomy)
    chosen_taxonomy = get_taxonomy(options.taxonomy) if options.taxonomy and model is None else None
    warnings = [f"cohort CSV {cohort.path}: columns {list(cohort.ignored_columns)} are not cohort columns and "
                f"were ignored"] if cohort.ignored_columns else []
    if options.labels == "detect":
        raise CosynthError("--labels detect labels one --slide; for a cohort, run `wsi-cosynth detect` on each "
                           "slide and give the files in the CSV's annotations column")
    with output_lock(out):
        work = CohortWorkDir(out, _settings(options, model), restart=options.restart)
        detections, note = _detections_for(out, options, model)
        warnings += [note] if note else []
        slides = _slides(cohort.rows, options, work, fractions, detections=detections)
        try:
            with TaskRunner(workers=options.workers, scheduler=options.scheduler) as runner:
                if model is not None:
                    _plan(runner, slides, model, options.progress)
                    _make_tiles(runner, [s for s in slides if s.plan.ok], model, options)
                else:
                    _make_real(runner, slides, chosen_taxonomy, options)
            usable = [s for s in slides if s.plan.ok]
            if not usable:
                raise CosynthError(_nothing_exported(cohort.path, slides))
            taxonomy = (model.taxonomy if model is not None
                        else chosen_taxonomy or taxonomy_for_names(
                            {c for s in usable for c in s.plan.classes}, f"the annotations of cohort {cohort.path}"))
        except BaseException:
            if not any(work.path.glob("slides/*/*.npz")) and not any(work.path.glob("slides/*/slide.json")):
                work.remove()  # nothing to resume from: leave no trace
            raise
        summary = write_cohort_output(out, slides, taxonomy, options, fractions, warnings)
        if not summary.failed or skip_bad_slides:
            work.remove()
            return summary
        work.prune({s.store.path.name for s in slides if s.plan.ok})
        return replace(summary, work_dir=work.path)


# ----------------------------------------------------------------------------------------- setup
def _settings(options: ExportOptions, model: ModelInfo | None) -> dict[str, Any]:
    """What decides the stored tiles, besides each slide's own files and row (the resume
    manifest). Real tiles are stored in their slides' own class names, so the class options
    decide only the datasets written at the end, and may change on a rerun."""
    keys = ("source", "mpp", "tile_size", "stride", "min_tissue", "tissue_params", "pad", "sidecar",
            "tissue_regions", "seed")
    settings = options.settings_record(keys)
    if model is not None:
        sampling = _sampling(options, model)
        settings.update(options.settings_record(("layouts", "layout_model", "per_layout", "max_tiles", "batch_size",
                                                 "taxonomy", "class_map", "default_class", "colour_match",
                                                 "detector")))
        settings.update(model=model.digest, sampling=sampling.model_dump(mode="json"),
                        device=device_kind(options.device, options.scheduler))
        if settings["device"] != "cuda":
            settings["threads"] = options.threads or DEFAULT_SAMPLING_THREADS  # CPU numbers depend on it
    return settings


def _sampling(options: ExportOptions, model: ModelInfo):
    settings = model.sample.with_overrides(steps=options.steps, guidance=options.guidance, sampler=options.sampler,
                                           eta=options.eta, spacing=options.spacing, final_label=options.final_label)
    if not 1 <= settings.steps <= model.num_steps:
        raise CosynthError(f"--steps must be between 1 and the model's {model.num_steps} diffusion steps, "
                           f"got {settings.steps}")
    return settings


def _detections_for(out: Path, options: ExportOptions, model: ModelInfo | None) -> tuple[Path | None, str | None]:
    """Where a synthetic cohort export writes the detections of its unannotated slides,
    ``<out>.detections/<slide stem>.geojson`` beside the output (kept: they are what the layouts
    came from), and a warning to report. None when nothing is detected: real tiles, no detector, a
    given layout model, or a model that cannot draw the detector's classes (the warning says so)."""
    if (model is None or options.detector is None or str(options.detector) == NO_DETECTOR
            or (options.layouts == "resample" and options.layout_model is not None)):
        return None, None
    unusable = detections_unusable(options.detector, model.taxonomy,
                                   with_default_class(options.class_map, options.default_class), model.unknown_class)
    if unusable is not None:
        return None, (f"slides without nuclei annotations get resampled layouts: {unusable} "
                      "(--default-class NAME draws the detected nuclei as that class)")
    return out.parent / f"{out.name}.detections", None


def _slides(rows: tuple[CohortRow, ...], options: ExportOptions, work: CohortWorkDir,
            fractions: tuple[float, float, float], *, detections: Path | None) -> list[CohortSlide]:
    """Every row as a slide of the run: a stem unique in the cohort (tile names), its seed, its
    work folder, the split of its patient and, for a synthetic export of a slide without
    annotations, where its detections go (``detections``/stem.geojson)."""
    from ..annotations import find_sidecar

    tissues: dict[str, set[str]] = {}
    fixed: dict[str, str] = {}
    for row in rows:
        tissues.setdefault(row.patient, set()).update([row.tissue] if row.tissue else [])
        if row.split is not None:
            fixed[row.patient] = row.split
    patients = {p: PatientInfo(stratum="+".join(sorted(t)), fixed=fixed.get(p)) for p, t in tissues.items()}
    split_of = assign_splits(patients, fractions, options.seed)
    slides = []
    for row, stem in zip(rows, _unique_stems(rows)):
        slide_options = options.for_slide(tissue=row.tissue, slide_mpp=row.slide_mpp)
        annotations = row.annotations_path
        try:
            found = annotations if annotations is not None or not options.sidecar else find_sidecar(row.slide_path)
        except (CosynthError, OSError):
            found = None  # planning fails on it and says why
        identity = {"stem": stem, "slide": file_identity(row.slide_path), "annotations": file_identity(found),
                    "tissue": slide_options.tissue, "slide_mpp": slide_options.slide_mpp}
        folder = slide_folder(stem, identity)
        job = SlideJob(stem=stem, slide=str(row.slide_path),
                       annotations=None if annotations is None else str(annotations), options=slide_options,
                       seed=slide_seed(options.seed, stem),
                       detections=str(detections / f"{stem}.geojson") if detections and found is None else None)
        slides.append(CohortSlide(row=row, job=job, store=work.slide(folder), split=split_of[row.patient]))
    return slides


def _unique_stems(rows: tuple[CohortRow, ...]) -> list[str]:
    """File-name stems of the slides, made unique in CSV order with ``_2``, ``_3``, ... suffixes."""
    stems: list[str] = []
    taken: set[str] = set()
    for row in rows:
        base = safe_stem(row.slide_path)
        stem, k = base, 1
        while stem in taken:
            k += 1
            stem = f"{base}_{k}"
        taken.add(stem)
        stems.append(stem)
    return stems


def slide_seed(seed: int, stem: str) -> int:
    """The seed of one slide's layouts and noise: from the run's seed and the slide's name, so a
    slide gives the same tiles whatever else is in the cohort."""
    digest = hashlib.sha256(f"{int(seed)}:{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ----------------------------------------------------------------------------------------- tasks
def _plan(runner: TaskRunner, slides: list[CohortSlide], model: ModelInfo, progress: bool) -> None:
    """The layouts of every slide of a synthetic cohort: stored before, or from a planning task."""
    from tqdm import tqdm

    by_name: dict[str, CohortSlide] = {}
    tasks = []
    for s in slides:
        stored = _stored_plan(s.store)
        if stored is not None and s.store.layouts() is not None:
            s.plan = stored
        else:
            task = Task(f"plan-{s.job.stem}", plan_slide_task, (s.job, model))
            by_name[task.name] = s
            tasks.append(task)
    bar = tqdm(total=len(slides), initial=len(slides) - len(tasks), disable=not progress, desc="plan",
               unit="slide", dynamic_ncols=True)

    def keep(task: Task, result: SlidePlanResult) -> None:
        s = by_name.pop(task.name)
        if result.ok:
            s.store.save_layouts(list(result.layouts), result.colours)
            result = replace(result, layouts=(), colours={})  # on disk now; the client keeps no layouts
            _save_plan(s.store, result)
        s.plan = result
        bar.update(1)

    try:
        runner.run(tasks, keep)
    finally:
        bar.close()


def _save_plan(store: SlideStore, plan: SlidePlanResult) -> None:
    store.save_info({"status": OK, "n_tiles": plan.n_tiles, "classes": list(plan.classes), "notes": list(plan.notes)})


def _stored_plan(store: SlideStore) -> SlidePlanResult | None:
    info = store.info()
    if info is None or info.get("status") != OK:
        return None
    return SlidePlanResult(status=OK, n_tiles=int(info["n_tiles"]), classes=tuple(info["classes"]),
                           notes=tuple(info["notes"]))


def _make_tiles(runner: TaskRunner, slides: list[CohortSlide], model: ModelInfo, options: ExportOptions) -> None:
    """Synthesise the batches not finished before and keep each in its slide's store."""
    from tqdm import tqdm

    targets: dict[str, tuple[SlideStore, int]] = {}
    bar = tqdm(total=sum(s.plan.n_tiles for s in slides), disable=not options.progress, desc="cohort", unit="tile",
               dynamic_ncols=True)
    sampling = _sampling(options, model)
    spec = SamplingSpec(model_path=str(model.path), steps=sampling.steps, guidance=sampling.guidance,
                        sampler=sampling.sampler, eta=sampling.eta, device=options.device,
                        threads=options.threads or DEFAULT_SAMPLING_THREADS, model_digest=model.digest,
                        spacing=sampling.spacing, final_label=sampling.final_label)

    def tasks() -> Iterator[Task]:
        # Lazy: a slide's layouts are read from its store only when its batches are next.
        for s in slides:
            stored = s.store.layouts()
            if stored is None:
                raise CosynthError(f"cohort work folder {s.store.path} lost its layouts; rerun the same command")
            layouts, colours = stored
            for batch in make_batches(plan_jobs(layouts, options.per_layout, colours), options.batch_size, s.job.seed):
                if s.store.part_done(batch.index):
                    bar.update(len(batch.jobs))
                    continue
                task = Task(f"{s.job.stem}-b{batch.index}", synthesize_batch, (spec, batch))
                targets[task.name] = (s.store, batch.index)
                yield task

    def keep(task: Task, tiles: list[LabelledTile]) -> None:
        store, index = targets.pop(task.name)
        store.save_part(index, tiles)
        bar.update(len(tiles))

    try:
        runner.run(tasks(), keep, concurrency=1 if runner.distributed else sampling_concurrency(spec))
    finally:
        bar.close()


def _make_real(runner: TaskRunner, slides: list[CohortSlide], taxonomy: Taxonomy | None,
               options: ExportOptions) -> None:
    """Read and label the real tiles not finished before, planning each slide with its first
    task; a slide whose task fails is marked failed and the rest of it is skipped."""
    from tqdm import tqdm

    targets: dict[str, tuple[CohortSlide, int]] = {}
    bar = tqdm(total=0, disable=not options.progress, desc="cohort", unit="tile", dynamic_ncols=True)

    def part(s: CohortSlide, index: int, first: bool) -> Task:
        task = Task(f"{s.job.stem}-t{index}", real_part_task, (s.job, index, taxonomy, first))
        targets[task.name] = (s, index)
        return task

    def known(s: CohortSlide, plan: SlidePlanResult, start: int) -> list[Task]:
        """The tasks of a planned slide from part ``start`` on that are not finished yet."""
        s.plan = plan
        bar.total += plan.n_tiles
        bar.refresh()
        todo = []
        for index in range(start, n_parts(s, options, synthetic=False)):
            if s.store.part_done(index):
                bar.update(min(REAL_TILES_PER_TASK, plan.n_tiles - index * REAL_TILES_PER_TASK))
            else:
                todo.append(part(s, index, first=False))
        return todo

    def tasks() -> Iterator[Task]:
        for s in slides:
            stored = _stored_plan(s.store)
            if stored is None:
                yield part(s, 0, first=True)
            else:
                yield from known(s, stored, 0)

    def keep(task: Task, result: RealPart) -> list[Task]:
        s, index = targets.pop(task.name)
        if result.plan is not None and not result.plan.ok:
            if s.plan is None or s.plan.ok:
                s.plan = result.plan  # the first reason is the one reported
            return []
        if s.plan is not None and not s.plan.ok:
            return []  # the slide failed in another task: the rest of it is not used
        follow = []
        if result.plan is not None:
            _save_plan(s.store, result.plan)
            follow = known(s, result.plan, 1)
        s.store.save_part(index, list(result.tiles))
        bar.update(len(result.tiles))
        return follow

    try:
        runner.run(tasks(), keep)
    finally:
        bar.close()
        release_plans()  # in-process, this thread kept the last slide open


def _nothing_exported(csv_path: Path, slides: list[CohortSlide]) -> str:
    shown = "; ".join(f"{s.row.slide}: {s.plan.status.removeprefix('failed: ')}" for s in slides[:3])
    more = f"; and {len(slides) - 3} more" if len(slides) > 3 else ""
    return f"no slide of cohort {csv_path} could be exported ({len(slides)} failed: {shown}{more})"


__all__ = ["CohortSummary", "SlideOutcome", "export_cohort", "slide_seed"]
