"""The Python API for dataset-building scripts: export, load_model, synthesize.

>>> import wsi_cosynth as wc
>>> model = wc.load_model()                                    # the bundled default model
>>> tiles = wc.synthesize(layouts, model, steps=25, seed=0)    # list[LabelledTile]
>>> wc.export("slide.svs", "out/", format="coco")              # same as the CLI
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
) -> list[LabelledTile]:
    """Co-synthesise one labelled tile per layout (image, instances via point-guided watershed,
    classes, distance map). Layouts must use the model's taxonomy and tile size; the same seed
    and batch size give the same tiles. ``device``: "cpu", "cuda[:N]" or "auto" (a GPU when
    present); None keeps a given model where it is (and means "auto" for a path).
    Sampling settings (``steps``, classifier-free ``guidance`` scale, ``sampler`` "ddpm" or
    "ddim" with ``eta``, ``guidance_interval`` (lo, hi): guide only the steps with t / (T - 1) in
    it) left None are the model's own, its config's ``sample`` section (the bundled model: 25
    DDPM steps, guidance 2 on [0.5, 1]).
    """
    from .pipeline.jobs import SynthesisJob, make_batches
    from .pipeline.worker import SamplingSpec, resolve_device, sample_tiles

    if model is None or isinstance(model, (str, Path)):
        device = resolve_device(device or "auto")
        model = load_model(model, device=device)
    else:
        device = resolve_device(device) if device is not None else str(model.device)
    if not layouts:
        raise CosynthError("synthesize: no layouts given")
    jobs = [SynthesisJob(lay.provenance.name, lay) for lay in layouts]
    spec = SamplingSpec(model_path="", steps=steps, guidance=guidance, sampler=sampler, eta=eta, device=device,
                        guidance_interval=guidance_interval)
    tiles: list[LabelledTile] = []
    for batch in make_batches(jobs, batch_size, seed):
        tiles += sample_tiles(model, batch, spec, device)
    return tiles


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
