"""The Python API for dataset-building scripts: export, export_cohort, load_model, synthesize,
synthesize_region, detect.

>>> import wsi_cosynth as wc
>>> model = wc.load_model()                                    # the bundled default model
>>> tiles = wc.synthesize(layouts, model, steps=25, seed=0)    # list[LabelledTile]
>>> wc.export("slide.svs", "out/", format="coco")              # same as the CLI
>>> wc.export_cohort("cohort.csv", "out/", format="coco")      # a study, split by patient
>>> wc.detect("slide.svs", "nuclei.geojson")                   # nuclei of an unannotated slide
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import CosynthError
from .records import LabelledTile, Layout


def load_model(path: str | Path | None = None, *, device: str = "cpu"):
    """Load a checkpoint directory (default: the bundled model) as a CosynthModel."""
    from .pipeline.synthetic import default_model_path
    from .training.checkpoint import load_model as _load

    return _load(path if path is not None else default_model_path(), device=device)


def synthesize(
    layouts: list[Layout],
    model=None,
    *,
    steps: int | None = None,
    guidance: float | None = None,
    sampler: str | None = None,
    eta: float | None = None,
    seed: int = 0,
    batch_size: int = 4,
    device: str | None = None,
    guidance_interval: tuple[float, float] | None = None,
    spacing: str | None = None,
    final_label: str | None = None,
    colour_reference: Any = None,
) -> list[LabelledTile]:
    """Co-synthesise one labelled tile per layout (image, instances via point-guided watershed,
    classes, distance map). Layouts must use the model's taxonomy and tile size; the same seed
    and batch size give the same tiles. ``device``: "cpu", "cuda[:N]" or "auto" (a GPU when
    present); None keeps a given model where it is (and means "auto" for a path).
    Sampling settings (``steps``, classifier-free ``guidance`` scale, ``sampler`` "ddpm", "ddim"
    with ``eta``, "dpmpp_2m" or "dpmpp_2m_sde", ``guidance_interval`` (lo, hi): guide only the steps
    with t / (T - 1) in it, ``spacing`` "linspace" or "trailing" of the steps, ``final_label``
    "sample" or "mode" for the label's last step) left None are the
    model's own, its config's ``sample`` section (MODEL_CARD.md states the bundled model's).
    ``colour_reference``: the look to give the images (wsi_cosynth/colour.py): a real (H, W, 3)
    uint8 RGB image, a :class:`~wsi_cosynth.colour.ColourStats` or its dict, for every layout, or
    a list of those (None allowed) with one per layout; None leaves the model's colours.
    """
    from .colour import reference_per_layout
    from .pipeline.jobs import SynthesisJob, make_batches
    from .pipeline.worker import SamplingSpec, resolve_device, sample_tiles

    if model is None or isinstance(model, (str, Path)):
        device = resolve_device(device or "auto")
        model = load_model(model, device=device)
    else:
        device = resolve_device(device) if device is not None else str(model.device)
    if not layouts:
        raise CosynthError("synthesize: no layouts given")
    colours = reference_per_layout(colour_reference, len(layouts))
    jobs = [SynthesisJob(lay.provenance.name, lay, colour) for lay, colour in zip(layouts, colours)]
    spec = SamplingSpec(model_path="", steps=steps, guidance=guidance, sampler=sampler, eta=eta, device=device,
                        guidance_interval=guidance_interval, spacing=spacing,
                        final_label=final_label)
    tiles: list[LabelledTile] = []
    for batch in make_batches(jobs, batch_size, seed):
        tiles += sample_tiles(model, batch, spec, device)
    return tiles


def synthesize_region(
    slide: str | Path,
    out: str | Path,
    *,
    annotations: str | Path | None = None,
    region: tuple[int, int, int, int] | None = None,
    tissue: str | None = None,
    slide_mpp: float | None = None,
    model: str | Path | None = None,
    windows: str = "wrap",
    overlap: int | None = None,
    chunk: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    sampler: str | None = None,
    spacing: str | None = None,
    **options: Any,
):
    """Co-synthesise a region of a slide in one fused sampling and write it as a synthetic slide,
    as ``wsi-cosynth synthesize`` does: ``out/<stem>.synthetic.tif``, ``.synthetic.geojson`` and
    ``.synthetic-labels.tif``. ``region``: (x, y, w, h) level-0 px, default the tissue's bounding box.
    ``windows`` "wrap", "shift" or "overlap", ``overlap`` px, ``chunk`` px: see
    :class:`wsi_cosynth.pipeline.region.RegionOptions`; sampling settings left None are the model's.
    ``options``: the other keywords of :func:`wsi_cosynth.pipeline.region.synthesize_region`
    (class_map, default_class, device, threads, overwrite, restart, progress).
    Returns a RegionResult (paths, size, nuclei, seconds, notes).
    """
    from .pipeline.region import RegionOptions
    from .pipeline.region import synthesize_region as _synthesize_region

    settings = RegionOptions(steps=steps, guidance=guidance, sampler=sampler, spacing=spacing, scheme=windows,
                             overlap=overlap, chunk=chunk, batch_size=batch_size, seed=seed)
    return _synthesize_region(slide, out, annotations=annotations, region=region, tissue=tissue, slide_mpp=slide_mpp,
                              model=model, options=settings, **options)


def export(
    slide: str | Path,
    out: str | Path,
    *,
    format: str = "coco",
    source: str = "synthetic",
    annotations: str | Path | None = None,
    **options: Any,
):
    """Export a dataset from a slide, as ``wsi-cosynth export`` does.

    ``source="synthetic"`` (default) takes the options of
    :func:`wsi_cosynth.pipeline.synthetic.export_synthetic` (model, layouts, per_layout, steps,
    guidance, seed, max_tiles, tissue, batch_size, device, workers, scheduler, ...);
    ``source="real"`` those of :func:`wsi_cosynth.pipeline.real.export_real`.
    Returns an ExportSummary (out, fmt, n_tiles, n_nuclei, taxonomy, warnings).
    """
    if source == "synthetic":
        from .pipeline.synthetic import export_synthetic

        return export_synthetic(slide, out, format, annotations=annotations, **options)
    if source == "real":
        from .pipeline.real import export_real

        return export_real(slide, annotations, out, format, **options)
    raise CosynthError(f"unknown source {source!r} (valid: synthetic, real)")


def export_cohort(
    cohort: str | Path,
    out: str | Path,
    *,
    format: str = "coco",
    source: str = "synthetic",
    split: str | tuple[float, float, float] = "0.8,0.1,0.1",
    skip_bad_slides: bool = False,
    **options: Any,
):
    """Export every slide of a cohort CSV into ``out/train``, ``out/val`` and ``out/test``, split
    by patient, as ``wsi-cosynth export --cohort`` does.

    ``options``: the fields of :class:`wsi_cosynth.pipeline.options.ExportOptions` (mpp, tissue,
    slide_mpp, taxonomy, model, per_layout, steps, seed, batch_size, threads, workers,
    scheduler, overwrite, ...); an unknown keyword is a TypeError. Returns a CohortSummary
    (out, fmt, taxonomy, slides with their status, splits, warnings); slides that could not be
    used are in ``summary.failed``, the others are exported; unless ``skip_bad_slides``, the
    finished work is then kept (``summary.work_dir``) for a rerun after fixing them.
    """
    from .pipeline.cohort import export_cohort as _export_cohort
    from .pipeline.options import ExportOptions

    settings = ExportOptions.from_keywords(source=source, format=format, **options)
    return _export_cohort(cohort, out, settings, split=split, skip_bad_slides=skip_bad_slides)


def default_detector_path() -> Path:
    """The bundled detector's directory (CosynthError when this build has none)."""
    path = Path(__file__).resolve().parent / "assets" / "default-detector"
    if not (path / "detector.json").is_file():
        raise CosynthError("this build bundles no nuclei detector yet: pass --detector DIR (a directory with "
                           "detector.json and detector.safetensors)")
    return path


def detect(
    slide: str | Path,
    out: str | Path,
    *,
    detector: str | Path | None = None,
    slide_mpp: float | None = None,
    window: int = 512,
    min_tissue: float = 0.02,
    threads: int | None = None,
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = False,
    workers: int = 0,
    scheduler: str | None = None,
):
    """Detect the nuclei of a slide's tissue and write them as QuPath detections (GeoJSON; GeoParquet
    for an ``out`` ending in .parquet), as ``wsi-cosynth detect`` does. ``detector``: a detector
    directory (default: the bundled one); ``window``: the window core in detector px; ``workers`` /
    ``scheduler``: run the windows on local Dask processes or an existing cluster (``threads``
    torch threads each). Returns a DetectResult (path, nuclei per class, windows, Mpx, seconds)."""
    from .detection import DetectOptions, detect_slide, load_detector
    from .detection.slide_detect import detector_digest

    folder = Path(detector) if detector is not None else default_detector_path()
    net = load_detector(folder)
    distributed = bool(workers) or scheduler is not None
    if workers and scheduler is not None:
        raise CosynthError("give either workers (a local cluster) or scheduler (an existing one), not both")
    if threads and not distributed:
        import torch

        torch.set_num_threads(int(threads))
    options = DetectOptions(core=int(window), min_tissue=float(min_tissue))
    return detect_slide(slide, out, net, digest=detector_digest(folder), slide_mpp=slide_mpp, options=options,
                        overwrite=overwrite, restart=restart, progress=progress, workers=int(workers),
                        scheduler=scheduler, worker_threads=(int(threads) if threads else 1) if distributed else None)
