"""Time the evaluation: Inception feature extraction (images/s) and a whole `evaluate` run.

Usage::

    python benchmarks/evaluation_speed.py [--extract-images 64] [--batch-size 16]
        [--eval-tiles 432] [--device cpu]

1. Feature extraction: ``--extract-images`` CoNSeP tiles (256 x 256, resized to 299 x 299) in
   batches of ``--batch-size`` after one warm-up batch (TorchScript optimises on its first calls).
2. ``evaluate``: CoNSeP training tiles against themselves, ``--eval-tiles`` per set, through the
   same function the CLI runs (reading, features, proportions, agreement, layouts, every metric,
   report with plots). When ``--eval-tiles`` < 432 the time for 432 vs 432 is extrapolated:
   per-tile pass time x 432 plus the (size-dependent but small) comparison time, and the
   output says so.

The last line printed is one JSON object with every number. The machine's load average is
included because the CPU may be shared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FULL_SET = 432


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("WSI_COSYNTH_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--extract-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-tiles", type=int, default=FULL_SET)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import numpy as np
    import torch

    from wsi_cosynth.evaluation import evaluate_datasets
    from wsi_cosynth.exporters import read_dataset
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor, batched

    consep = Path(args.data) / "consep" / "train"
    extractor = InceptionFeatureExtractor(device=args.device)
    images = [t.image for t in itertools.islice(read_dataset(consep, "consep"), args.extract_images + args.batch_size)]
    warm, timed = images[: args.batch_size], images[args.batch_size :]
    extractor(np.stack(warm))
    start = time.perf_counter()
    for stack in batched(timed, args.batch_size):
        extractor(stack)
    extract_s = time.perf_counter() - start
    images_per_s = len(timed) / extract_s
    print(f"feature extraction: {len(timed)} images in {extract_s:.1f} s = {images_per_s:.2f} images/s "
          f"(batch {args.batch_size}, {torch.get_num_threads()} torch threads, {args.device})", flush=True)

    n = min(args.eval_tiles, FULL_SET)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        figures = evaluate_datasets(
            consep, "consep", consep, "consep", Path(tmp) / "report",
            device=args.device, batch_size=args.batch_size, max_images=n, progress=True,
        )
        total_s = time.perf_counter() - start
    sec = figures["seconds"]
    per_tile_s = (sec["real_pass"] + sec["synthetic_pass"]) / (2 * n)
    overhead_s = total_s - sec["real_pass"] - sec["synthetic_pass"]
    full_s = total_s if n == FULL_SET else per_tile_s * 2 * FULL_SET + overhead_s
    print(f"evaluate {n} vs {n} tiles: {total_s:.1f} s (real pass {sec['real_pass']:.1f} s, synthetic pass "
          f"{sec['synthetic_pass']:.1f} s, metrics {sec['compare']:.1f} s); 432 vs 432: {full_s:.1f} s"
          f"{'' if n == FULL_SET else ' (extrapolated)'}", flush=True)
    print(json.dumps({
        "benchmark": "evaluation_speed",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "batch_size": args.batch_size,
        "extract_images": len(timed),
        "extract_seconds": round(extract_s, 2),
        "extract_images_per_s": round(images_per_s, 2),
        "eval_tiles_per_set": n,
        "eval_seconds": round(total_s, 1),
        "eval_seconds_breakdown": {k: round(v, 2) for k, v in sec.items()},
        "eval_432_vs_432_seconds": round(full_s, 1),
        "eval_432_extrapolated": n != FULL_SET,
        "fid_self": figures["image"]["fid"],
    }))


if __name__ == "__main__":
    main()
