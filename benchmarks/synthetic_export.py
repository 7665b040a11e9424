"""End-to-end synthetic export throughput: tiles/s at several step counts, and 1 vs 2 Dask workers.

Runs ``wsi-cosynth export`` (COCO) on the demo slide (built from the bundled histolytics tile)
with a model checkpoint (default: the bundled default model) for ``--tiles`` tissue tiles, at
each ``--steps`` value in-process, then at the first step value with ``--workers 1`` and
``--workers 2`` (a local Dask cluster, one torch thread per worker, so the ratio shows how
batches scale over processes). Each run is timed from the command's start to its end,
model loading and writing included. Prints a table, then one JSON line.

    .venv/bin/python benchmarks/synthetic_export.py [--model DIR] [--tiles 8] [--steps 25 50 100]
        [--worker-tiles 32] [--skip-in-process] [--skip-workers]

``--worker-tiles`` sets the size of the worker runs separately (default: ``--tiles``): the fixed
cost of starting a cluster and loading the model in every worker weighs less on a longer run.
The demo slide has 25 tissue tiles, so larger runs take two samples per layout
(``--per-layout 2``); tiles/s always counts the images actually written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


DEMO_TISSUE_TILES = 25


def run_export(slide: Path, out: Path, model: str | None, steps: int, tiles: int, extra: list[str]) -> tuple[float, int]:
    """(seconds, tiles written) of one CLI export of ``tiles`` tiles."""
    per_layout = -(-tiles // DEMO_TISSUE_TILES)
    cmd = [sys.executable, "-m", "wsi_cosynth", "export", "--slide", str(slide), "--out", str(out), "--format", "coco",
           "--steps", str(steps), "--max-tiles", str(-(-tiles // per_layout)), "--per-layout", str(per_layout),
           "--batch-size", "4", "--no-progress", "--tissue", "ovarian", *(["--model", model] if model else []), *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return seconds, len(json.loads((out / "annotations.json").read_text())["images"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--worker-tiles", type=int, default=None)
    args = parser.parse_args()
    worker_tiles = args.worker_tiles or args.tiles

    from wsi_cosynth.demo import build_demo_slide

    results: dict = {"tiles": args.tiles, "worker_tiles": worker_tiles, "in_process": {}, "workers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        slide = build_demo_slide(Path(tmp) / "demo")
        for steps in [] if args.skip_in_process else args.steps:
            seconds, n = run_export(slide, Path(tmp) / f"s{steps}", args.model, steps, args.tiles, [])
            results["in_process"][steps] = {"tiles": n, "seconds": round(seconds, 1), "tiles_per_s": round(n / seconds, 3)}
            print(f"in-process, {steps:4d} steps, {n} tiles: {seconds:7.1f} s  {n / seconds:.3f} tiles/s", flush=True)
        if not args.skip_workers:
            steps = args.steps[0]
            for workers in (1, 2):
                seconds, n = run_export(slide, Path(tmp) / f"w{workers}", args.model, steps, worker_tiles,
                                        ["--workers", str(workers), "--threads", "1"])
                results["workers"][workers] = {"tiles": n, "seconds": round(seconds, 1), "tiles_per_s": round(n / seconds, 3)}
                print(f"{workers} Dask worker(s), {steps} steps, {n} tiles: {seconds:7.1f} s  {n / seconds:.3f} tiles/s",
                      flush=True)
            w = results["workers"]
            results["speedup_2_vs_1_workers"] = round(w[1]["seconds"] / w[2]["seconds"], 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
