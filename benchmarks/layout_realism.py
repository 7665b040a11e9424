"""Realism of generated layouts: layout_distance(generated, real_b) / layout_distance(real_a, real_b).

Real layouts are split into two halves that share no source, the model is fitted on A only, and
as many layouts as B holds are sampled (same sizes). A ratio of 1 means the generated layouts are
as close to B as real layouts from elsewhere are; target <= 1.5. The ratio depends on the split
(how alike the two halves happen to be), so several splits are evaluated and their mean reported:

- CoNSeP: tiles split BY SOURCE IMAGE (``train_<image>_<tile>``), ``--splits`` random halves of
  the image ids drawn from ``--seed``.
- Whole-slide nuclei table: 256 x 256 level-0 windows with >= 5 nuclei, split by region into the
  left/right halves and the top/bottom halves of the slide (A = left / top). Real windows were
  kept only when they hold >= 5 nuclei, so generated windows are kept by the same rule (drawn
  until there are as many as in B); ``ratio_unselected`` reports the ratio without that rule.
  At most ``--max-windows`` random windows of each half are used (statistics over 14k windows
  per half are slow; the ratio's reference distance uses the same subsets).

Usage::

    python benchmarks/layout_realism.py --consep ../shared/data/consep/train \
        --table ../shared/data/histolytics/hgsc_nuclei_wsi.parquet

Prints one line per split, then ONE JSON line (last).
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

MIN_POINTS = 5  # window selection rule of the slide table


def _generate(model, b: list, rng: np.random.Generator, min_points: int) -> list:
    """One generated layout per layout of ``b`` (same size), keeping only those with >= min_points."""
    out, tries = [], 0
    for lay in b:
        while True:
            g = sample_layout(model, lay.size, rng, name=f"g{len(out)}")
            tries += 1
            if len(g) >= min_points or tries > 50 * len(b):
                break
        out.append(g)
    return out


def evaluate(a: list, b: list, seed: int, *, min_points: int = 0) -> dict:
    """Fit on ``a``, sample as many as ``b``, and compare with ``b`` (see the module docstring)."""
    t0 = time.perf_counter()
    model = fit_layout_model(a, np.random.default_rng(seed))
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = _generate(model, b, np.random.default_rng(seed + 1), min_points)
    t_sample = time.perf_counter() - t0
    sb = layout_statistics(b)
    d_ab = layout_distance(a, sb)
    d_gb = layout_distance(gen, sb)
    out = {
        "n_a": len(a), "n_b": len(b), "nuclei_a": sum(len(x) for x in a), "nuclei_b": sum(len(x) for x in b),
        "d_real_a_real_b": round(d_ab.total, 4), "d_generated_real_b": round(d_gb.total, 4),
        "ratio": round(d_gb.total / d_ab.total, 3),
        "groups_real": {k: round(v, 3) for k, v in d_ab.groups.items()},
        "groups_generated": {k: round(v, 3) for k, v in d_gb.groups.items()},
        "fit_s": round(t_fit, 2), "sample_ms_per_layout": round(1000 * t_sample / max(len(gen), 1), 2),
        "model": {"compartments": len(model.compartments), "length_compartment_px": model.length_compartment_px,
                  "spacing_kappa": model.spacing_kappa, "softness": model.softness,
                  "mark_coupling": model.mark_coupling},
    }
    if min_points > 0:
        raw = [sample_layout(model, lay.size, np.random.default_rng([seed, i]), name=f"u{i}")
               for i, lay in enumerate(b)]
        out["ratio_unselected"] = round(layout_distance(raw, sb).total / d_ab.total, 3)
    return out


def consep_splits(path: str, n_splits: int, seed: int) -> list[tuple[str, list, list]]:
    """``n_splits`` random halves of the CoNSeP source images: (label, A, B)."""
    lays = [layout_from_tile(t) for t in read_dataset(path, "consep")]
    image = [lay.provenance.name.split("_")[1] for lay in lays]
    ids = sorted(set(image), key=int)
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_splits):
        in_a = set(rng.permutation(ids)[: len(ids) // 2].tolist())
        a = [x for x, i in zip(lays, image) if i in in_a]
        b = [x for x, i in zip(lays, image) if i not in in_a]
        out.append((f"images_A={sorted(in_a, key=int)}", a, b))
    return out


def table_splits(path: str, max_windows: int, seed: int, tile: int = 256) -> list[tuple[str, list, list]]:
    """Left/right and top/bottom halves of the slide table: (label, A, B)."""
    import pyarrow.parquet as pq
    import shapely

    table = pq.read_table(path, columns=["geometry", "class_name"])
    xy = shapely.get_coordinates(shapely.centroid(shapely.from_wkb(table.column("geometry").to_pylist())))
    tax = get_taxonomy("pannuke")  # neoplastic, inflammatory, connective, dead (macrophages -> inflammatory)
    ids = class_ids_from_names(table.column("class_name").to_pylist(), tax)
    rng = np.random.default_rng(seed)

    def windows(mask: np.ndarray) -> list:
        lays = list(layouts_from_slide_points(xy[mask], ids[mask], tax, tile_size=tile, min_points=MIN_POINTS))
        if len(lays) > max_windows:
            lays = [lays[i] for i in np.sort(rng.choice(len(lays), max_windows, replace=False))]
        return lays

    out = []
    for label, axis in (("left/right", 0), ("top/bottom", 1)):
        first = xy[:, axis] < float(np.median(xy[:, axis]))
        out.append((label, windows(first), windows(~first)))
    return out


def _summary(results: list[dict]) -> dict:
    ratios = [r["ratio"] for r in results]
    return {"ratio_mean": round(float(np.mean(ratios)), 3), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratios": ratios, "splits": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--consep", help="CoNSeP tile directory")
    ap.add_argument("--table", help="whole-slide nuclei table (GeoParquet, class_name)")
    ap.add_argument("--splits", type=int, default=5, help="random source-image splits of CoNSeP (default 5)")
    ap.add_argument("--max-windows", type=int, default=4000, help="windows per half of the slide table (default 4000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    result: dict = {"benchmark": "layout_realism", "seed": args.seed}
    if args.consep:
        runs = []
        for label, a, b in consep_splits(args.consep, args.splits, args.seed):
            runs.append({"split": label, **evaluate(a, b, args.seed)})
            print("consep", json.dumps(runs[-1]), flush=True)
        result["consep"] = _summary(runs)
    if args.table:
        runs = []
        for label, a, b in table_splits(args.table, args.max_windows, args.seed):
            runs.append({"split": label, **evaluate(a, b, args.seed, min_points=MIN_POINTS)})
            print("slide_table", json.dumps(runs[-1]), flush=True)
        result["slide_table"] = _summary(runs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
