"""``wsi-cosynth tiles``: cut a slide into tiles over its tissue, with an index and an overview.

Writes into ``--out`` (created whole, or not at all)::

    tiles/<name>.png   RGB tiles at --mpp
    index.csv          one row per tile: name, x/y level 0, col, row, tissue fraction,
                       tissue type, nucleus count (centroids inside the tile)
    index.json         the same rows plus the slide, its mpp and the grid settings
    thumbnail.png      the slide with the tissue mask (green) and the tile grid (red)
    tissue_mask.png    the tissue mask (255 = tissue) at its own resolution
"""

from __future__ import annotations

import argparse

from ._output import add_output_arguments, say, show_progress, warn
from ._slide_args import add_slide_arguments, plan_kwargs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tiles", help="tile a slide over its tissue (PNGs + index + thumbnail)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_slide_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    add_output_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline.tiling import write_tiles

    summary = write_tiles(args.slide, args.annotations, args.out, overwrite=args.overwrite,
                          progress=show_progress(args), **plan_kwargs(args))
    for note in summary["warnings"]:
        warn(note)
    say(args, f"wrote {summary['n_tiles']} tiles ({summary['n_nuclei']} nuclei) to {args.out}")
    return 0
