"""Arguments shared by the slide commands (tiles, export): grid, resolution, tissue."""

from __future__ import annotations

import argparse


def add_slide_arguments(parser: argparse.ArgumentParser, *, slide_required: bool = True) -> None:
    """--slide, --annotations, --mpp, --tile-size, --stride, --min-tissue, --slide-mpp, --tissue.

    ``slide_required=False``: the command checks that --slide or its alternative is given."""
    parser.add_argument("--slide", required=slide_required,
                        help="whole-slide image (.svs, .ndpi, .mrxs, .tiff, DICOM, ...) or a plain image region "
                             "(strip/tiled/OME TIFF, PNG, JPEG; give --slide-mpp if it records no resolution)")
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
    parser.add_argument("--pad", nargs="?", const="white", default=None, metavar="COLOUR",
                        help="also tile the slide's right/bottom edges (and a slide smaller than a tile), filling "
                             "outside the slide with COLOUR (a name, #rrggbb or r,g,b; default white)")


def plan_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`wsi_cosynth.pipeline.planning.plan_slide` from parsed arguments."""
    return dict(mpp=args.mpp, tile_size=args.tile_size, stride=args.stride, min_tissue=args.min_tissue,
                slide_mpp=args.slide_mpp, tissue=args.tissue, tissue_regions=args.tissue_regions,
                pad=parse_colour(args.pad) if getattr(args, "pad", None) is not None else None)


def parse_colour(text: str) -> tuple[int, int, int]:
    """(r, g, b) of a colour name ("white"), "#rrggbb" or "r,g,b"; CosynthError otherwise."""
    from ..errors import CosynthError

    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 3:
        try:
            rgb = tuple(int(p) for p in parts)
        except ValueError:
            rgb = ()
        if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
            return rgb  # type: ignore[return-value]
    else:
        from PIL import ImageColor

        try:
            return tuple(ImageColor.getrgb(str(text))[:3])  # type: ignore[return-value]
        except ValueError:
            pass
    raise CosynthError(f"--pad colour {text!r} is not a colour name, #rrggbb or r,g,b with values 0..255")
