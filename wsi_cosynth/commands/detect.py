"""``wsi-cosynth detect``: find the nuclei of a slide's tissue with a nuclei detector.

Writes QuPath detections (a GeoJSON FeatureCollection: one Polygon per nucleus in level-0 pixels,
``classification`` = its class, ``measurements`` with its area and "Detection confidence"), which
QuPath imports, TIAToolbox and GeoPandas read, and ``wsi-cosynth export --annotations`` takes;
or, for ``--out x.parquet``, GeoParquet (WKB polygons, class_name, confidence, area_px2) for
GeoPandas, DuckDB or Spark on millions of nuclei.

The slide is read at the detector's own resolution in overlapping windows over its tissue; a
nucleus on a window border is written once (see wsi_cosynth/detection/slide_detect.py). Windows
run in-process, on ``--workers N`` local Dask processes or on a cluster (``--scheduler
ADDRESS``), with the same output. A killed run resumes when rerun with the same options; the
output appears only when complete.
"""

from __future__ import annotations

import argparse

from ._output import add_output_arguments, say, show_progress


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("detect", help="detect the nuclei of a slide (QuPath GeoJSON detections)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slide", required=True, help="the slide (any format export reads)")
    parser.add_argument("--out", required=True,
                        help="output file: QuPath GeoJSON (.geojson/.json), or GeoParquet when it ends in .parquet")
    parser.add_argument("--detector", default=None, help="detector directory (default: the bundled detector)")
    parser.add_argument("--slide-mpp", type=float, default=None,
                        help="the slide's microns per pixel, when the file does not record it")
    parser.add_argument("--window", type=int, default=512, help="window core side in detector px (default 512)")
    parser.add_argument("--min-tissue", type=float, default=0.02,
                        help="skip windows with less tissue than this fraction (default 0.02)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: all cores; with --workers/--scheduler: per worker, default 1)")
    parser.add_argument("--workers", type=int, default=0, help="local Dask worker processes (0: in-process)")
    parser.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (tcp://host:8786)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--restart", action="store_true", help="discard an interrupted run's finished windows")
    add_output_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import detect

    result = detect(args.slide, args.out, detector=args.detector, slide_mpp=args.slide_mpp, window=args.window,
                    min_tissue=args.min_tissue, threads=args.threads, overwrite=args.overwrite, restart=args.restart,
                    progress=show_progress(args), workers=args.workers, scheduler=args.scheduler)
    per_class = ", ".join(f"{n} {name}" for name, n in sorted(result.classes.items())) or "none"
    say(args, f"wrote {result.path}: {result.n_nuclei} nuclei ({per_class}) in {result.n_windows} windows, "
              f"{result.megapixels:.1f} Mpx in {result.seconds:.0f} s")
    return 0
