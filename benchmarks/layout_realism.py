"""Realism of generated layouts: layout_distance(generated, real_b) / layout_distance(real_a, real_b).

Real layouts are split into two halves that share no source: CoNSeP tiles by source image
(``train_<image>_<tile>``: even-ranked images -> A, odd -> B); the whole-slide nuclei table by
region (left half of the slide -> A, right half -> B; 256 x 256 windows with >= 5 nuclei). The
model is fitted on A only, and as many layouts as B holds are sampled. A ratio of 1 means the
generated layouts are as close to B as real layouts from elsewhere are; target <= 1.5.

Usage::

    python benchmarks/layout_realism.py --consep ../shared/data/consep/train \
        --table ../shared/data/histolytics/hgsc_nuclei_wsi.parquet

Prints per-dataset results, then ONE JSON line (last).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsi_cosynth.exporters import read_dataset  # noqa: E402
from wsi_cosynth.layouts import class_ids_from_names, layout_from_tile, layouts_from_slide_points  # noqa: E402
from wsi_cosynth.layouts.fit import fit_layout_model  # noqa: E402
from wsi_cosynth.layouts.point_process import sample_layout  # noqa: E402
from wsi_cosynth.layouts.stats import layout_distance, layout_statistics  # noqa: E402
from wsi_cosynth.taxonomy import get_taxonomy  # noqa: E402


def evaluate(a: list, b: list, seed: int) -> dict:
    t0 = time.perf_counter()
    model = fit_layout_model(a, np.random.default_rng(seed))
    t_fit = time.perf_counter() - t0
    rng = np.random.default_rng(seed + 1)
    t0 = time.perf_counter()
    gen = [sample_layout(model, lay.size, rng, name=f"g{i}") for i, lay in enumerate(b)]
    t_sample = time.perf_counter() - t0
    sb = layout_statistics(b)
    d_ab = layout_distance(a, sb)
    d_gb = layout_distance(gen, sb)
    return {
        "n_a": len(a), "n_b": len(b), "nuclei_a": sum(len(x) for x in a), "nuclei_b": sum(len(x) for x in b),
        "d_real_a_real_b": round(d_ab.total, 4), "d_generated_real_b": round(d_gb.total, 4),
        "ratio": round(d_gb.total / d_ab.total, 3),
        "groups_real": {k: round(v, 3) for k, v in d_ab.groups.items()},
        "groups_generated": {k: round(v, 3) for k, v in d_gb.groups.items()},
        "fit_s": round(t_fit, 2), "sample_ms_per_layout": round(1000 * t_sample / max(len(b), 1), 2),
        "model": {"sigma": model.sigma_intensity, "tau_large": model.tau_large, "tau_small": model.tau_small},
    }


def consep_split(path: str) -> tuple[list, list]:
    lays = [layout_from_tile(t) for t in read_dataset(path, "consep")]
    image = [lay.provenance.name.split("_")[1] for lay in lays]
    ids = sorted(set(image), key=int)
    in_a = set(ids[::2])
    return [x for x, i in zip(lays, image) if i in in_a], [x for x, i in zip(lays, image) if i not in in_a]


def table_split(path: str, tile: int = 256) -> tuple[list, list]:
    import pyarrow.parquet as pq
    import shapely

    table = pq.read_table(path, columns=["geometry", "class_name"])
    xy = shapely.get_coordinates(shapely.centroid(shapely.from_wkb(table.column("geometry").to_pylist())))
    tax = get_taxonomy("pannuke")  # neoplastic, inflammatory, connective, dead (macrophages -> inflammatory)
    ids = class_ids_from_names(table.column("class_name").to_pylist(), tax)
    x_mid = float(np.median(xy[:, 0]))
    left = xy[:, 0] < x_mid
    out = []
    for half in (left, ~left):
        out.append(list(layouts_from_slide_points(xy[half], ids[half], tax, tile_size=tile, min_points=5)))
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--consep", help="CoNSeP tile directory")
    ap.add_argument("--table", help="whole-slide nuclei table (GeoParquet, class_name)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    result: dict = {"benchmark": "layout_realism"}
    if args.consep:
        result["consep"] = evaluate(*consep_split(args.consep), args.seed)
        print("consep", json.dumps(result["consep"]))
    if args.table:
        result["slide_table"] = evaluate(*table_split(args.table), args.seed)
        print("slide_table", json.dumps(result["slide_table"]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
