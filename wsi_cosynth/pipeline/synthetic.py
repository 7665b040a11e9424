"""Synthetic export: slide -> tissue tiles at the model's resolution -> layouts (annotations or
resampled) -> deterministic batches -> sampler + point-guided watershed (in-process or Dask) ->
dataset writer + preview.

Resume: finished batches are kept in a work directory next to the output (see workdir.py); a
rerun of the same command after an interruption synthesises only the missing batches and ends
with the same files as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..atomic import output_lock
from ..colour import ColourStats
from ..errors import CosynthError, require_file
from ..models.config import SampleConfig
from ..records import LabelledTile, Layout
from ..slide import TissueParams
from ..taxonomy import Taxonomy, with_default_class
from .execution import run_batches
from .jobs import Batch, make_batches, plan_jobs
from .detected import detect_for_export, detections_path, detections_unusable, needs_detection
from .layouts_for_slide import choose_layouts
from .planning import plan_slide
from .real import ExportSummary
from .slide_look import colours_digest, read_slide_look
from .workdir import WorkDir
from .worker import DEFAULT_SAMPLING_THREADS, SamplingSpec, resolve_device

PREVIEW_NAME = "preview.png"


def default_model_path() -> Path:
    """The bundled default model (a checkpoint directory)."""
    return Path(str(resources.files("wsi_cosynth") / "assets" / "default-model"))


@dataclass(frozen=True)
class ModelInfo:
    """What planning needs from a checkpoint, read without loading its weights."""

    path: Path
    taxonomy: Taxonomy
    mpp: float | None
    tile_size: int
    digest: str
    num_steps: int
    sample: SampleConfig  # the model's own sampling settings (the default of every run)
    unknown_class: bool = False  # layouts may keep nuclei without a class (model.unknown_class)


def model_info(path: str | Path | None) -> ModelInfo:
    from ..models.config import CosynthConfig
    from ..training.checkpoint import WEIGHTS, read_metadata

    p = Path(path) if path is not None else default_model_path()
    meta = read_metadata(p)
    directory = p if p.is_dir() else p.parent
    digest = hashlib.sha256((directory / WEIGHTS).read_bytes()).hexdigest()[:16]
    config = CosynthConfig.from_dict(meta["config"], where=f"model metadata {p}")
    return ModelInfo(path=directory, taxonomy=Taxonomy.from_dict(meta["taxonomy"], where=f"model metadata {p}"),
                     mpp=meta.get("mpp"), tile_size=int(meta["tile_size"]), digest=digest,
                     num_steps=int(config.diffusion.num_steps), sample=config.sample,
                     unknown_class=config.model.unknown_class)


def require_model_taxonomy(info: ModelInfo, taxonomy: str | None) -> None:
    """CosynthError unless ``taxonomy`` (a built-in key) is None or the model's own class set."""
    if taxonomy is None:
        return
    from ..taxonomy import get_taxonomy

    wanted = get_taxonomy(taxonomy)
    if wanted.names != info.taxonomy.names:
        raise CosynthError(
            f"model {info.path} makes classes {list(info.taxonomy.names)} ({info.taxonomy.key}), not "
            f"{list(wanted.names)} ({wanted.key}); export with its own taxonomy and convert with --class-map, "
            "or train a model on that class set"
        )


def _layouts_digest(layouts: list[Layout]) -> str:
    h = hashlib.sha256()
    for lay in layouts:
        h.update(lay.provenance.name.encode())
        h.update(str(lay.tissue).encode())
        h.update(lay.xy_tile.round(3).tobytes())
        h.update(lay.classes.tobytes())
    return h.hexdigest()[:16]


def device_kind(device: str, scheduler: str | None) -> str:
    """Where sampling will run: "cpu" or "cuda" (resolved here, so a GPU asked for where there is
    none fails before any work), or the request itself on an external cluster, whose workers
    resolve it."""
    if scheduler is not None:
        return device if device == "auto" else ("cuda" if device.startswith("cuda") else "cpu")
    return "cuda" if resolve_device(device).startswith("cuda") else "cpu"


def synthesize_to_dataset(
    layouts: list[Layout],
    out: str | Path,
    fmt: str,
    model: ModelInfo,
    *,
    per_layout: int = 1,
    steps: int | None = None,
    guidance: float | None = None,
    sampler: str | None = None,
    eta: float | None = None,
    spacing: str | None = None,
    final_label: str | None = None,
    seed: int = 0,
    batch_size: int = 4,
    device: str = "auto",
    threads: int | None = None,
    workers: int = 0,
    scheduler: str | None = None,
    restart: bool = False,
    progress: bool = False,
    writer_options: dict[str, Any] | None = None,
    colours: dict[str, ColourStats] | None = None,
    real_tiles: dict[str, Any] | None = None,
) -> "DatasetResult":
    """Co-synthesise ``per_layout`` tiles per layout and write them as a dataset in ``fmt``.
    ``colours``: colour references by layout name (their tiles are colour-matched);
    ``real_tiles``: real images by layout name, shown beside their synthetic tiles in the preview.
    Sampling settings left None are the model's own (``model.sample``). ``threads``: torch
    threads per batch (default :data:`~.worker.DEFAULT_SAMPLING_THREADS`); CPU results depend
    on it, so it is part of the run's settings (see worker.py)."""
    from tqdm import tqdm

    from ..exporters import WRITE_FORMATS, open_writer
    from ..render import preview, save_png

    if str(fmt).lower() not in WRITE_FORMATS:
        raise CosynthError(f"unknown export format {fmt!r} (valid: {', '.join(WRITE_FORMATS)})")
    settings = model.sample.with_overrides(steps=steps, guidance=guidance, sampler=sampler, eta=eta, spacing=spacing,
                                           final_label=final_label)
    if not 1 <= settings.steps <= model.num_steps:
        raise CosynthError(f"--steps must be between 1 and the model's {model.num_steps} diffusion steps, got {settings.steps}")
    threads = DEFAULT_SAMPLING_THREADS if threads is None else int(threads)
    if threads < 1:
        raise CosynthError(f"--threads must be >= 1, got {threads}")
    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not (writer_options or {}).get("overwrite"):
        # Checked before synthesis, not only by the writer at the end, so no work is wasted.
        raise CosynthError(f"output {out_dir} exists and is not empty (choose a new path or --overwrite)")
    # One run per output at a time: a second export to the same --out refuses at once (flock,
    # released by the kernel when a run dies, so a killed run leaves nothing stuck).
    with output_lock(out_dir):
        kind = device_kind(device, scheduler)
        jobs = plan_jobs(layouts, per_layout, colours)
        batches = make_batches(jobs, batch_size, seed)
        # The device kind too: GPU sampling (bf16) gives other numbers than CPU, so a run is not
        # finished on a different kind of device than it started on.
        params = {"model": model.digest, "layouts": _layouts_digest(layouts), "per_layout": per_layout,
                  "steps": settings.steps, "guidance": settings.guidance, "sampler": settings.sampler, "eta": settings.eta,
                  "spacing": settings.spacing, "final_label": settings.final_label,
                  "seed": seed, "batch_size": batch_size, "device": kind}
        if colours:
            params["colours"] = colours_digest(colours)
        if kind != "cuda":
            params["threads"] = threads  # CPU sampling gives other numbers on another thread count
        work = WorkDir(out, params, restart=restart)
        todo = [b for b in batches if not work.is_done(b)]
        spec = SamplingSpec(model_path=str(model.path), steps=settings.steps, guidance=settings.guidance,
                            sampler=settings.sampler, eta=settings.eta, spacing=settings.spacing,
                            final_label=settings.final_label, device=device, threads=threads,
                            model_digest=model.digest)
        bar = tqdm(total=len(jobs), initial=len(jobs) - sum(len(b.jobs) for b in todo), disable=not progress,
                   desc="synthesise", unit="tile", dynamic_ncols=True)

        def keep(batch: Batch, tiles: list[LabelledTile]) -> None:
            work.save(batch, tiles)
            bar.update(len(tiles))

        try:
            run_batches(todo, spec, keep, workers=workers, scheduler=scheduler)
        except BaseException:
            if not any(work.is_done(b) for b in batches):
                work.remove()  # nothing to resume from: leave no trace
            raise
        finally:
            bar.close()
        n_nuclei, shown = 0, []
        writer = open_writer(fmt, out, model.taxonomy, **(writer_options or {}))
        with writer:
            for batch in batches:
                for tile in work.load(batch):
                    writer.add(tile)
                    n_nuclei += tile.n_nuclei
                    if len(shown) < 12:
                        shown.append(tile)
        shown_real = [(real_tiles or {}).get(_layout_name(t)) for t in shown]
        references = shown_real if any(r is not None for r in shown_real) else None
        save_png(Path(out) / PREVIEW_NAME, preview(shown, references=references))
        work.remove()
        return DatasetResult(n_tiles=len(jobs), n_nuclei=n_nuclei, taxonomy=writer.taxonomy.key, notes=tuple(writer.notes))


def _layout_name(tile: LabelledTile) -> str:
    """The layout a synthetic tile came from: its name without the ``_s<k>`` of plan_jobs."""
    return tile.provenance.name.rsplit("_s", 1)[0]


@dataclass(frozen=True)
class DatasetResult:
    """What :func:`synthesize_to_dataset` wrote: counts, the taxonomy its ids follow, writer notes."""

    n_tiles: int
    n_nuclei: int
    taxonomy: str
    notes: tuple[str, ...]


def export_synthetic(
    slide: str | Path,
    out: str | Path,
    fmt: str,
    *,
    model: str | Path | None = None,
    annotations: str | Path | None = None,
    layouts: str = "auto",
    layout_model: str | Path | None = None,
    class_map: dict[str, str] | None = None,
    taxonomy: str | None = None,
    mpp: float | None = None,
    stride: int | None = None,
    min_tissue: float = 0.5,
    slide_mpp: float | None = None,
    tissue: str | None = None,
    tissue_regions: str | Path | None = None,
    tissue_params: TissueParams = TissueParams(),
    max_tiles: int | None = None,
    seed: int = 0,
    progress: bool = False,
    pad: tuple[int, int, int] | None = None,
    default_class: str | None = None,
    colour_match: str = "tile",
    detector: str | Path | None = "bundled",
    **sampling: Any,
) -> ExportSummary:
    """Co-synthesise a dataset for a slide's tissue tiles (see the module docstring).

    Tiles are laid at the MODEL's resolution and tile size unless ``mpp`` is given. ``sampling``
    takes the keyword options of :func:`synthesize_to_dataset` (per_layout, steps, guidance,
    sampler, eta, spacing, final_label, batch_size, device, threads, workers, scheduler, restart, writer_options).
    Nuclei without a class ("nucleus", "unclassified") take ``default_class`` (a class of the
    model); without it they stay unclassified for a model with an unknown class, and are an
    error that says so for any other. ``pad``: see :func:`plan_slide`. ``colour_match``: the
    synthetic tiles take the colour of the real tile each stands for ("tile"), of all of them
    ("slide"), or keep the model's ("none"); see slide_look.py. The preview shows each
    synthetic tile beside its real tile. ``detector``: a nuclei detector directory (default
    ``"bundled"``; None or ``"none"``: no detection); a slide without annotations (none given, no
    sidecar) gets its layouts from its detected nuclei (:mod:`.detected`), written beside ``out``.
    """
    require_file(slide, "slide")
    info = model_info(model)
    detected_note = None
    # Layouts drawn from a given layout model need no nuclei of the slide's own.
    if needs_detection(slide, annotations, detector) and not (layouts == "resample" and layout_model is not None):
        unusable = detections_unusable(detector, info.taxonomy, with_default_class(class_map, default_class),
                                       info.unknown_class)
        if unusable is None:
            detected = detect_for_export(slide, detections_path(out), detector, slide_mpp=slide_mpp,
                                         min_tissue=min_tissue, progress=progress)
            annotations, detected_note = detected.path, detected.note
        else:
            detected_note = (f"slide has no nuclei annotations and {unusable}: layouts are resampled instead "
                             "(--default-class NAME draws the detected nuclei as that class)")
    require_model_taxonomy(info, taxonomy)
    target_mpp = float(mpp if mpp is not None else (info.mpp or 0.5))
    if max_tiles is not None and max_tiles < 1:
        raise CosynthError(f"--max-tiles must be >= 1, got {max_tiles}")
    with plan_slide(slide, annotations, mpp=target_mpp, tile_size=info.tile_size, stride=stride,
                    min_tissue=min_tissue, slide_mpp=slide_mpp, tissue=tissue, tissue_regions=tissue_regions,
                    tissue_params=tissue_params, pad=pad) as plan:
        chosen, notes = choose_layouts(plan, info.taxonomy, layouts=layouts, layout_model=layout_model,
                                       class_map=class_map, default_class=default_class, max_tiles=max_tiles,
                                       seed=seed, tissue=tissue, unknown_class=info.unknown_class)
        look = read_slide_look(plan, chosen, colour_match)
        if detected_note is not None:
            notes.insert(0, detected_note)
    result = synthesize_to_dataset(chosen, out, fmt, info, seed=seed, progress=progress, colours=look.colours,
                                   real_tiles=look.real_tiles, **sampling)
    return ExportSummary(out=Path(out), fmt=str(fmt).lower(), n_tiles=result.n_tiles, n_nuclei=result.n_nuclei,
                         taxonomy=result.taxonomy, warnings=(*notes, *result.notes))
