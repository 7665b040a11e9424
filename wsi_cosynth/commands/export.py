"""``wsi-cosynth export``: write a dataset of tiles from a slide in a trainer's format.

``--source synthetic`` (default) co-synthesises image + label for each tissue tile's nuclei layout
with the joint diffusion model (bundled default model unless ``--model``): layouts come from the
slide's annotations (``--annotations`` or a sidecar .geojson), from its detected nuclei, or are
resampled from a fitted layout model (``--layouts resample``). Tiles are laid at the MODEL's
resolution and tile size unless ``--mpp`` is given. An interrupted run resumes when rerun with
the same options; ``--workers N`` / ``--scheduler ADDRESS`` run the batches on Dask.

A slide without annotations has its nuclei detected first (the bundled detector unless
``--detector DIR``; ``--detector none`` resamples CoNSeP-fitted layouts instead); ``--layouts
resample`` fits the layout model to the slide's own nuclei (annotated or detected).

``--source real`` exports the slide's own tiles with labels rasterised from its annotations
(polygons; point-only annotations cannot give instance maps), or, with ``--labels detect``, from
the detector's nuclei (every format's metadata then names the detector: ``labels_by``).
Formats: coco, lizard, pannuke, geojson (QuPath-importable, level-0 slide pixels), consep
(HoVer-Net's layout). Annotations with
no classes (MoNuSeg) get the one-class "nucleus" taxonomy; ``--default-class`` names a class for
them instead. Plain images (strip TIFF, PNG, JPEG) are slides too; ``--pad`` tiles past the
slide's edges (and a slide smaller than one tile) with a background colour.

``--cohort cohort.csv`` instead of ``--slide`` exports a whole study (columns slide, annotations,
patient, tissue, slide_mpp, split) into OUT/train, OUT/val and OUT/test, split by patient
(``--split 0.8,0.1,0.1``, seeded, stratified by tissue), with OUT/cohort.csv (one row per slide:
tiles, nuclei, status) and OUT/cohort.json. A slide that cannot be used is listed as failed and
the command exits 2 after exporting the others (0 with ``--skip-bad-slides``).
"""

from __future__ import annotations

import argparse

from ._output import add_output_arguments, say, show_progress, warn

SOURCES: tuple[str, ...] = ("synthetic", "real")
FORMATS: tuple[str, ...] = ("coco", "lizard", "pannuke", "geojson", "consep")
DEFAULT_SPLIT = "0.8,0.1,0.1"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ._slide_args import add_slide_arguments

    parser = subparsers.add_parser("export", help="export a tile dataset (coco, lizard, pannuke, geojson, consep)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_slide_arguments(parser, slide_required=False)
    parser.add_argument("--cohort", default=None, metavar="CSV",
                        help="export every slide of a cohort CSV (instead of --slide) into OUT/train, OUT/val, OUT/test")
    parser.add_argument("--split", default=DEFAULT_SPLIT, metavar="TRAIN,VAL,TEST",
                        help="--cohort: patient fractions per split (default 0.8,0.1,0.1; seeded by --seed)")
    parser.add_argument("--skip-bad-slides", action="store_true",
                        help="--cohort: exit 0 when some slides failed (they are listed in OUT/cohort.csv)")
    parser.add_argument("--source", choices=SOURCES, default="synthetic", help="where tiles come from")
    parser.add_argument("--format", required=True, choices=FORMATS, help="dataset format")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--taxonomy", default=None,
                        help="class set of the dataset (default: the built-in set holding the annotation classes)")
    parser.add_argument("--class-map", default=None, help="YAML {annotation class: taxonomy class} overrides")
    parser.add_argument("--default-class", default=None, metavar="NAME",
                        help="class of nuclei annotated without one (MoNuSeg, unclassified QuPath detections); "
                             "needed for --source synthetic unless the model has an unknown class (its classes "
                             "are fixed, e.g. other)")
    parser.add_argument("--coco-segmentation", choices=("rle", "polygon"), default="rle",
                        help="COCO masks as compressed RLE (lossless, default) or polygons (holes filled)")
    parser.add_argument("--geojson-multipolygon", action="store_true",
                        help="GeoJSON: keep every part of a nucleus as a MultiPolygon (default: its largest Polygon)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--detector", default="bundled", metavar="DIR|bundled|none",
                        help="nuclei detector for a slide without annotations (default: the bundled one; 'none': "
                             "resample layouts instead): its nuclei are the layouts of a synthetic export and, with "
                             "--labels detect, the labels of a real one (written beside the output as "
                             "<out>.detections.geojson)")
    parser.add_argument("--labels", choices=("annotations", "detect"), default="annotations",
                        help="--source real: labels from the annotations (default) or from the nuclei detector "
                             "(marked model-made in the dataset's metadata)")
    add_output_arguments(parser)
    _add_synthesis_arguments(parser)
    # Resolution and tile size default per source: 0.5 um/px and 256 px for real tiles, the
    # model's own for synthetic ones.
    parser.set_defaults(run=run, mpp=None, tile_size=None)


def _add_synthesis_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("synthesis (--source synthetic)")
    g.add_argument("--model", default=None, help="checkpoint directory (default: the bundled model)")
    g.add_argument("--layouts", choices=("auto", "annotations", "resample"), default="auto",
                   help="layouts from the annotations, or resampled from a layout model (auto: annotations when present)")
    g.add_argument("--layout-model", default=None, help="fitted layout model .json (default: the bundled CoNSeP one)")
    g.add_argument("--per-layout", type=int, default=1, help="samples per layout (default 1)")
    # Sampling settings default to the model's own (its config's sample section; the bundled
    # model: 25 DDPM steps, guidance 2), chosen for that model by measurement.
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's; with --sampler ddpm, 1000 = the full ancestral chain)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's; 1 = none, half the compute)")
    g.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde"), default=None,
                   help="sampler (default: the model's): strided DDPM or DDIM, or DPM-Solver++(2M) / its SDE")
    g.add_argument("--eta", type=float, default=None, help="DDIM eta (0 deterministic, 1 ~ DDPM; default: the model's)")
    g.add_argument("--spacing", choices=("linspace", "trailing"), default=None,
                   help="where the steps fall in 0..T-1 (default: the model's): linspace ends at t = 0, trailing "
                        "spreads every step over the noise")
    g.add_argument("--final-label", choices=("sample", "mode"), default=None,
                   help="the label's last step: a draw from its x0 prediction or its most likely class (default: the model's)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0): the same seed gives the same files")
    g.add_argument("--max-tiles", type=int, default=None, help="use at most this many tissue tiles (row-major)")
    g.add_argument("--batch-size", type=int, default=4, help="tiles per network batch (default 4)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU per worker when present)")
    g.add_argument("--workers", type=int, default=0, help="local Dask worker processes (0: in-process)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch threads per batch (default 1; in-process runs one batch per core at once); CPU "
                        "results depend on it, so keep it the same to get the same files anywhere")
    g.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (tcp://host:8786)")
    g.add_argument("--restart", action="store_true", help="discard an interrupted run's finished batches")
    g.add_argument("--colour-match", choices=("tile", "slide", "none"), default="tile",
                   help="give each synthetic tile the colour of the real tile it stands for (tile, default), of "
                        "the slide's tiles together (slide), or keep the model's colours (none)")


def run(args: argparse.Namespace) -> int:
    from ..errors import CosynthError

    if args.cohort is not None:
        if args.slide is not None or args.annotations is not None:
            raise CosynthError("--cohort takes the slides and their annotations from the CSV: drop --slide/--annotations")
        return _run_cohort(args)
    if args.slide is None:
        raise CosynthError("give --slide FILE (one slide) or --cohort CSV (a study)")
    if args.skip_bad_slides or args.split != DEFAULT_SPLIT:
        raise CosynthError("--split and --skip-bad-slides go with --cohort CSV, not with --slide")
    # The source is the one switch between pipelines; each returns a summary to report.
    if args.source == "real":
        summary = _run_real(args)
    elif args.source == "synthetic":
        summary = _run_synthetic(args)
    else:  # argparse restricts --source to SOURCES
        raise AssertionError(args.source)
    for note in summary.warnings:
        warn(note)
    say(args, f"wrote {summary.n_tiles} tiles, {summary.n_nuclei} nuclei ({summary.fmt}, taxonomy "
              f"{summary.taxonomy}) to {summary.out}")
    return 0


def _writer_options(args: argparse.Namespace) -> dict:
    options: dict = {"overwrite": args.overwrite}
    if args.format == "coco":
        options["segmentation"] = args.coco_segmentation
    if args.format == "geojson":
        options["multipolygon"] = args.geojson_multipolygon
    return options


def _run_synthetic(args: argparse.Namespace):
    from ..pipeline.synthetic import export_synthetic
    from ..taxonomy import load_class_map
    from ._slide_args import parse_colour

    class_map = load_class_map(args.class_map) if args.class_map else None
    if args.tile_size is not None:
        say(args, "note: --tile-size is ignored with --source synthetic (tiles have the model's size)")
    return export_synthetic(
        args.slide, args.out, args.format, model=args.model, annotations=args.annotations, layouts=args.layouts,
        layout_model=args.layout_model, class_map=class_map, taxonomy=args.taxonomy, mpp=args.mpp, stride=args.stride,
        min_tissue=args.min_tissue, slide_mpp=args.slide_mpp, tissue=args.tissue,
        tissue_regions=args.tissue_regions, max_tiles=args.max_tiles,
        seed=args.seed, progress=show_progress(args), per_layout=args.per_layout, steps=args.steps,
        guidance=args.guidance, sampler=args.sampler, eta=args.eta, spacing=args.spacing, final_label=args.final_label,
        batch_size=args.batch_size, device=args.device, threads=args.threads, workers=args.workers, scheduler=args.scheduler, restart=args.restart,
        writer_options=_writer_options(args), default_class=args.default_class,
        pad=parse_colour(args.pad) if args.pad is not None else None, colour_match=args.colour_match,
        detector=args.detector,
    )


def _run_real(args: argparse.Namespace):
    from ..pipeline.real import export_real
    from ..taxonomy import load_class_map
    from ._slide_args import plan_kwargs

    class_map = load_class_map(args.class_map) if args.class_map else None
    if args.mpp is None:
        args.mpp = 0.5
    if args.tile_size is None:
        args.tile_size = 256
    return export_real(
        args.slide, args.annotations, args.out, args.format, taxonomy=args.taxonomy, class_map=class_map,
        progress=show_progress(args), writer_options=_writer_options(args), default_class=args.default_class,
        labels=args.labels, detector=args.detector, **plan_kwargs(args),
    )


def options_from_args(args: argparse.Namespace):
    """The :class:`~wsi_cosynth.pipeline.options.ExportOptions` of parsed ``export`` arguments."""
    from ..pipeline.options import ExportOptions
    from ..taxonomy import load_class_map
    from ._slide_args import parse_colour

    writer_options = _writer_options(args)
    return ExportOptions(
        source=args.source, format=args.format, mpp=args.mpp,
        tile_size=args.tile_size if args.source == "real" else None, stride=args.stride, min_tissue=args.min_tissue,
        slide_mpp=args.slide_mpp, tissue=args.tissue, tissue_regions=args.tissue_regions,
        pad=parse_colour(args.pad) if args.pad is not None else None,
        taxonomy=args.taxonomy, class_map=load_class_map(args.class_map) if args.class_map else None,
        default_class=args.default_class, model=args.model, layouts=args.layouts, layout_model=args.layout_model,
        per_layout=args.per_layout, max_tiles=args.max_tiles, seed=args.seed, steps=args.steps,
        guidance=args.guidance, sampler=args.sampler, eta=args.eta, spacing=getattr(args, "spacing", None),
        final_label=getattr(args, "final_label", None), colour_match=getattr(args, "colour_match", "tile"),
        detector=args.detector, labels=args.labels,
        batch_size=args.batch_size, device=args.device, threads=args.threads, workers=args.workers,
        scheduler=args.scheduler, restart=args.restart, overwrite=writer_options.pop("overwrite"),
        writer_options=writer_options, progress=show_progress(args),
    )


def _run_cohort(args: argparse.Namespace) -> int:
    import sys

    from ..pipeline.cohort import export_cohort

    if args.source == "synthetic" and args.tile_size is not None:
        say(args, "note: --tile-size is ignored with --source synthetic (tiles have the model's size)")
    summary = export_cohort(args.cohort, args.out, options_from_args(args), split=args.split,
                            skip_bad_slides=args.skip_bad_slides)
    for note in summary.warnings:
        warn(note)
    for slide in summary.failed:
        warn(f"slide {slide.slide} (patient {slide.patient}) {slide.status}")
    splits = ", ".join(f"{k} {v['tiles']}" for k, v in summary.splits.items())
    ok = len(summary.slides) - len(summary.failed)
    say(args, f"wrote {summary.n_tiles} tiles, {summary.n_nuclei} nuclei of {ok} of {len(summary.slides)} slides "
              f"({summary.fmt}, taxonomy {summary.taxonomy}; tiles per split: {splits}) to {summary.out}")
    if not summary.failed:
        return 0
    if summary.work_dir is not None:
        say(args, f"note: the finished slides are kept in {summary.work_dir}: rerun with --overwrite after fixing the "
                  "failed ones to redo only those (delete it otherwise)")
    if args.skip_bad_slides:
        return 0
    print(f"wsi-cosynth export: error: {len(summary.failed)} of {len(summary.slides)} slides failed (see "
          f"{summary.out}/cohort.csv); the others were exported; --skip-bad-slides accepts that", file=sys.stderr)
    return 2
