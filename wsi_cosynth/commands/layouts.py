"""``wsi-cosynth layouts``: extract layouts from tiles or a nuclei table, fit a layout model,
sample new layouts. Outputs: layouts as .json or .parquet (see :mod:`wsi_cosynth.layouts.io`),
models as .json, optional PNG preview.

Examples::

    wsi-cosynth layouts extract --data consep/train --format consep --mpp 0.25 --out real.json --preview real.png
    wsi-cosynth layouts extract --table nuclei.parquet --taxonomy histolytics --tile-size 256 --out slide.parquet
    wsi-cosynth layouts fit --layouts real.json --out model.json --seed 0
    wsi-cosynth layouts sample --model model.json -n 100 --size 256 256 --seed 0 --out new.json --preview new.png
"""

from __future__ import annotations

import argparse

from ._output import add_output_arguments, say


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("layouts", help="extract, fit and sample nuclei point layouts",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ex = sub.add_parser("extract", help="layouts from a tile dataset or a slide nuclei table")
    src = ex.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="tile dataset directory (read with --format)")
    src.add_argument("--table", help="slide nuclei table (.parquet with WKB 'geometry' or x/y columns, and class_name)")
    ex.add_argument("--format", help="tile dataset format (e.g. consep)")
    ex.add_argument("--taxonomy", help="target taxonomy key (default: the dataset's own; required for --table)")
    ex.add_argument("--class-map", help="YAML {source class: target class} overrides")
    ex.add_argument("--tile-size", type=int, default=256, help="window side in level-0 px for --table (default 256)")
    ex.add_argument("--tissue", help="tissue type recorded on every layout")
    ex.add_argument("--mpp", type=float, help="microns per pixel of the tiles, recorded on every layout "
                                              "(tile datasets such as CoNSeP do not record it)")
    ex.add_argument("--out", required=True, help="output .json or .parquet")
    ex.add_argument("--preview", help="PNG preview of the first layouts")
    fit = sub.add_parser("fit", help="fit a layout model (one per tissue type) to layouts")
    fit.add_argument("--layouts", required=True, help="layouts .json/.parquet")
    fit.add_argument("--out", required=True, help="model .json (with several tissue types: one file per tissue, "
                                                    "named <stem>.<tissue>.json)")
    fit.add_argument("--seed", type=int, default=0)
    sm = sub.add_parser("sample", help="sample new layouts from a fitted model")
    sm.add_argument("--model", required=True, help="model .json")
    sm.add_argument("-n", type=int, default=16, help="number of layouts (default 16)")
    sm.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"), help="layout size in px")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", required=True, help="output .json or .parquet")
    sm.add_argument("--preview", help="PNG preview")
    for action in (ex, fit, sm):
        add_output_arguments(action)  # no progress bars here; --quiet drops the summary lines
    parser.set_defaults(run=run)


def _read_table(path: str, taxonomy, class_map, tile_size: int, tissue):
    import numpy as np
    import pyarrow.parquet as pq

    from ..errors import CosynthError, require_file
    from ..layouts import class_ids_from_names, layouts_from_slide_points

    p = require_file(path, "nuclei table")
    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise CosynthError(f"nuclei table {p} is not readable Parquet: {exc}") from None
    cols = set(table.column_names)
    if "class_name" not in cols:
        raise CosynthError(f"nuclei table {p}: needs a 'class_name' column, found {sorted(cols)}")
    if {"x", "y"} <= cols:
        xy = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], axis=1).astype(np.float64)
    elif "geometry" in cols:
        import shapely

        geoms = shapely.from_wkb(table.column("geometry").to_pylist())
        xy = shapely.get_coordinates(shapely.centroid(geoms))
    else:
        raise CosynthError(f"nuclei table {p}: needs 'x'/'y' or WKB 'geometry' columns, found {sorted(cols)}")
    ids = class_ids_from_names(table.column("class_name").to_pylist(), taxonomy, class_map, where=f"nuclei table {p}")
    return list(layouts_from_slide_points(xy, ids, taxonomy, tile_size=tile_size, source=str(p), tissue=tissue))


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..errors import CosynthError
    from ..layouts.io import read_layouts, write_layouts
    from ..layouts.preview import write_preview
    from ..taxonomy import get_taxonomy, load_class_map

    if args.action == "extract":
        from ..layouts import layout_from_tile

        class_map = load_class_map(args.class_map) if args.class_map else None
        tax = get_taxonomy(args.taxonomy) if args.taxonomy else None
        if args.data:
            if not args.format:
                raise CosynthError("--data needs --format (e.g. --format consep)")
            from ..exporters import read_dataset

            layouts = [layout_from_tile(t) for t in read_dataset(args.data, args.format, taxonomy=tax, class_map=class_map)]
            if args.tissue:
                layouts = [lay.with_tissue(args.tissue) for lay in layouts]
        else:
            if tax is None:
                raise CosynthError("--table needs --taxonomy (the class set to map class_name into)")
            layouts = _read_table(args.table, tax, class_map, args.tile_size, args.tissue)
        if not layouts:
            raise CosynthError("no layouts found in the input")
        if args.mpp is not None:
            if not args.mpp > 0:
                raise CosynthError(f"--mpp must be a positive number of microns per pixel, got {args.mpp}")
            from dataclasses import replace

            layouts = [replace(lay, provenance=replace(lay.provenance, mpp=float(args.mpp))) for lay in layouts]
        write_layouts(layouts, args.out)
        say(args, f"{len(layouts)} layouts, {sum(len(x) for x in layouts)} nuclei -> {args.out}")
    elif args.action == "fit":
        from pathlib import Path

        from ..layouts.fit import fit_layout_models
        from ..layouts.point_process import save_layout_model

        models = fit_layout_models(read_layouts(args.layouts), np.random.default_rng(args.seed))
        out = Path(args.out)
        for tissue, model in models.items():
            path = out if len(models) == 1 else out.with_name(f"{out.stem}.{tissue or 'none'}{out.suffix}")
            save_layout_model(model, path)
            say(args, f"tissue {tissue!r}: {model.n_layouts} layouts -> {path}")
    else:
        from ..layouts.point_process import load_layout_model, sample_layouts

        if args.n < 1:
            raise CosynthError(f"-n must be >= 1, got {args.n}")
        model = load_layout_model(args.model)
        layouts = sample_layouts(model, args.n, tuple(args.size), np.random.default_rng(args.seed))
        write_layouts(layouts, args.out)
        say(args, f"{len(layouts)} layouts, {sum(len(x) for x in layouts)} nuclei -> {args.out}")
    if getattr(args, "preview", None):
        write_preview(layouts, args.preview)
        say(args, f"preview -> {args.preview}")
    return 0
