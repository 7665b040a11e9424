"""``wsi-cosynth convert``: read a nuclei dataset in one format and write it in another.

Classes are kept in the source's own class set unless ``--taxonomy`` names a built-in target set
(classes are then mapped by name; ``--class-map`` YAML overrides). Without ``--taxonomy``, Lizard,
PanNuke and CoNSeP outputs use the format's own class ids when every class maps into them by name
(``--class-map`` helps), and otherwise say which taxonomy their ids follow (also in taxonomy.json).
``--to consep`` writes HoVer-Net's layout (images/*.png, labels/*.mat with inst_map, type_map,
inst_type, inst_centroid). The output directory appears only when complete.
"""

from __future__ import annotations

import argparse

from ._output import add_output_arguments, say, show_progress, warn

READ = ("consep", "cellvit", "hovernet-json", "lizard", "pannuke", "coco", "geojson")
WRITE = ("lizard", "pannuke", "coco", "geojson", "consep")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help="convert a nuclei dataset between formats",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="source dataset (directory, or file where the format allows)")
    p.add_argument("out", metavar="OUT", help="output directory (must not exist or be empty)")
    p.add_argument("--from", dest="src_format", required=True, choices=READ, help="source format")
    p.add_argument("--to", dest="dst_format", required=True, choices=WRITE, help="output format")
    p.add_argument("--taxonomy", default=None, help="target class set (built-in key); default: the source's")
    p.add_argument("--class-map", default=None, metavar="FILE", help="YAML {source class: target class}")
    p.add_argument("--coco-segmentation", choices=("rle", "polygon"), default="rle",
                   help="COCO masks as compressed RLE (lossless, default) or polygons")
    p.add_argument("--overwrite", action="store_true", help="replace OUT once the new dataset is complete")
    p.add_argument("--tissue", default=None,
                   help="tissue type of tiles whose source records none (PanNuke types.npy, e.g. colon)")
    p.add_argument("--geojson-multipolygon", action="store_true",
                   help="GeoJSON: keep every part of a nucleus as a MultiPolygon (default: its largest Polygon)")
    add_output_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import itertools
    import sys
    from dataclasses import replace

    from tqdm import tqdm

    from ..errors import CosynthError
    from ..exporters import count_tiles, open_writer, read_dataset
    from ..exporters.native_ids import NATIVE_TAXONOMY
    from ..taxonomy import get_taxonomy, load_class_map

    taxonomy = get_taxonomy(args.taxonomy) if args.taxonomy else None
    class_map = load_class_map(args.class_map) if args.class_map else None
    native = args.dst_format in NATIVE_TAXONOMY
    if class_map and taxonomy is None and not native:
        raise CosynthError("--class-map needs --taxonomy (the class set to map into)")
    total = count_tiles(args.src, args.src_format)
    # Without --taxonomy the class map goes to the writer, which maps into the format's own ids.
    tiles = read_dataset(args.src, args.src_format, taxonomy=taxonomy, class_map=class_map if taxonomy else None)
    first = next(tiles, None)
    if first is None:
        raise CosynthError(f"{args.src}: no tiles found for format {args.src_format!r}")
    options = {"overwrite": args.overwrite}
    if args.dst_format == "coco":
        options["segmentation"] = args.coco_segmentation
    if args.dst_format == "geojson":
        options["multipolygon"] = args.geojson_multipolygon
    if class_map and taxonomy is None:
        options["class_map"] = class_map  # mapped into the format's own ids by the writer
    n = 0
    writer = open_writer(args.dst_format, args.out, taxonomy or first.taxonomy, native_ids=taxonomy is None, **options)
    with writer:
        bar = tqdm(total=total, unit="tile", desc=f"{args.src_format} -> {args.dst_format}",
                   disable=not show_progress(args), file=sys.stderr)
        for tile in itertools.chain([first], tiles):
            if args.tissue and not tile.provenance.tissue:
                tile = replace(tile, provenance=replace(tile.provenance, tissue=args.tissue))
            writer.add(tile)
            n += 1
            bar.update(1)
        bar.close()
    for note in writer.notes:
        warn(note)
    say(args, f"wrote {n} tiles to {args.out} ({args.dst_format}, class ids of taxonomy {writer.taxonomy.key})")
    return 0
