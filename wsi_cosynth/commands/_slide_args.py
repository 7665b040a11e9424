"""Arguments shared by the slide commands (tiles, export): grid, resolution, tissue."""

from __future__ import annotations

import argparse


def add_slide_arguments(parser: argparse.ArgumentParser) -> None:
    """--slide, --annotations, --mpp, --tile-size, --stride, --min-tissue, --slide-mpp, --tissue."""
    parser.add_argument("--slide", required=True, help="whole-slide image (.svs, .ndpi, .mrxs, .tiff, DICOM, ...)")
    parser.add_argument("--annotations", default=None,
                        help="nuclei annotations (QuPath .geojson, HoVer-Net .json, Aperio .xml, .parquet); "
                             "default: a file with the slide's name next to it (x.geojson for x.svs)")
    parser.add_argument("--tissue-regions", default=None, help="extra file of classified tissue-region polygons")
    parser.add_argument("--mpp", type=float, default=0.5, help="output microns per pixel (0.5 ~ 20x, 0.25 ~ 40x)")
    parser.add_argument("--tile-size", type=int, default=256, help="output tile side in pixels")
    parser.add_argument("--stride", type=int, default=None, help="grid step in output pixels (default: tile size)")
    parser.add_argument("--min-tissue", type=float, default=0.5, help="minimum tissue fraction of a tile, 0..1")
    parser.add_argument("--slide-mpp", type=float, default=None,
                        help="the slide's microns per pixel, when the file does not record it")
    parser.add_argument("--tissue", default=None,
                        help="tissue type of tiles that no classified tissue region covers (e.g. colon)")


def plan_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`wsi_cosynth.pipeline.planning.plan_slide` from parsed arguments."""
    return dict(mpp=args.mpp, tile_size=args.tile_size, stride=args.stride, min_tissue=args.min_tissue,
                slide_mpp=args.slide_mpp, tissue=args.tissue, tissue_regions=args.tissue_regions)
