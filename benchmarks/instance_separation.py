"""Instance-separation ablation on real tiles (the paper's Table: connectivity / marker-free /
point-guided watershed).

For each tile of a dataset: take the ground-truth instance map, derive its semantic map, its
distance map (:func:`wsi_cosynth.layouts.distance_map`) and its layout (centroids,
:func:`wsi_cosynth.layouts.layout_from_tile`); recover instances from (distance, semantic[, points])
with each method and score them against the ground truth (mean over tiles of mDice, AJI, AJI+,
PQ, DQ, SQ, Dice, plus class accuracy of matched instances).

Usage::

    python benchmarks/instance_separation.py --data ../shared/data/consep/train --format consep

Prints a table, then ONE JSON line (last) with per-method means.
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
from wsi_cosynth.instances import (  # noqa: E402
    separate_connected_components,
    separate_instances,
    separate_marker_free,
)
from wsi_cosynth.layouts import distance_map, layout_from_tile  # noqa: E402
from wsi_cosynth.metrics.instance_metrics import instance_stats, overlap_table  # noqa: E402

METHODS = ("connected_components", "marker_free_watershed", "point_guided_watershed")


def class_accuracy(true: np.ndarray, true_cls: np.ndarray, pred: np.ndarray, pred_cls: np.ndarray) -> tuple[int, int]:
    """(correct, matched): class agreement over (true, pred) pairs matched at IoU > 0.5."""
    ov = overlap_table(true, pred)
    if len(ov.inter) == 0:
        return 0, 0
    m = ov.iou > 0.5
    # Overlap indices are ranks of the sorted ids; ids are contiguous 1..N, so rank = id - 1.
    t_ids = np.unique(true[true > 0])
    p_ids = np.unique(pred[pred > 0])
    tc = true_cls[t_ids[ov.pair_true[m]] - 1]
    pc = pred_cls[p_ids[ov.pair_pred[m]] - 1]
    return int((tc == pc).sum()), int(m.sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset directory")
    ap.add_argument("--format", required=True, help="dataset format for wsi_cosynth.exporters.read_dataset")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N tiles (0 = all)")
    ap.add_argument("--h", type=float, default=0.1, help="h-maxima height of the marker-free baseline")
    args = ap.parse_args(argv)

    sums = {m: {} for m in METHODS}
    correct = {m: [0, 0] for m in METHODS}
    n_tiles = n_nuclei = 0
    t0 = time.perf_counter()
    seconds = {m: 0.0 for m in METHODS}
    for tile in read_dataset(args.data, args.format):
        if args.limit and n_tiles >= args.limit:
            break
        true = tile.instances
        semantic = tile.semantic()
        dist = distance_map(true)
        layout = layout_from_tile(tile)
        for m in METHODS:
            s = time.perf_counter()
            if m == "connected_components":
                pred, cls = separate_connected_components(semantic)
            elif m == "marker_free_watershed":
                pred, cls = separate_marker_free(dist, semantic, h=args.h)
            else:
                pred, cls = separate_instances(dist, semantic, layout.xy_tile, layout.classes)
            seconds[m] += time.perf_counter() - s
            for k, v in instance_stats(true, pred).items():
                sums[m][k] = sums[m].get(k, 0.0) + v
            c, n = class_accuracy(true, tile.classes, pred, cls)
            correct[m][0] += c
            correct[m][1] += n
        n_tiles += 1
        n_nuclei += tile.n_nuclei

    result: dict = {"benchmark": "instance_separation", "data": str(args.data), "format": args.format,
                    "tiles": n_tiles, "nuclei": n_nuclei, "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{n_tiles} tiles, {n_nuclei} nuclei")
    print(f"{'method':26s} {'mDice':>7s} {'AJI':>7s} {'AJI+':>7s} {'PQ':>7s} {'DQ':>7s} {'SQ':>7s} {'Dice':>7s} {'clsAcc':>7s}")
    for m in METHODS:
        mean = {k: v / max(n_tiles, 1) for k, v in sums[m].items() if k not in ("tp", "fp", "fn")}
        mean["class_accuracy"] = correct[m][0] / max(correct[m][1], 1)
        mean["ms_per_tile"] = 1000 * seconds[m] / max(n_tiles, 1)
        result[m] = {k: round(float(v), 4) for k, v in mean.items()}
        print(f"{m:26s} {mean['mdice']:7.4f} {mean['aji']:7.4f} {mean['aji_plus']:7.4f} {mean['pq']:7.4f} "
              f"{mean['dq']:7.4f} {mean['sq']:7.4f} {mean['dice']:7.4f} {mean['class_accuracy']:7.4f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
