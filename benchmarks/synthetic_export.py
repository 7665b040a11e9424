"""End-to-end synthetic export throughput: tiles/s at several step counts, and 1 vs 2 Dask workers.

Runs ``wsi-cosynth export`` (COCO) on the demo slide (built from the bundled histolytics tile)
with a model checkpoint (default: the bundled default model) for ``--tiles`` tissue tiles, at
each ``--steps`` value in-process, then at the first step value with ``--workers 1`` and
``--workers 2`` (a local Dask cluster, one torch thread per worker, so the ratio shows how
batches scale over processes). Each run is timed from the command's start to its end,
model loading and writing included. Prints a table, then one JSON line.

    .venv/bin/python benchmarks/synthetic_export.py [--model DIR] [--tiles 8] [--steps 25 50 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_export(slide: Path, out: Path, model: str | None, steps: int, tiles: int, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "wsi_cosynth", "export", "--slide", str(slide), "--out", str(out), "--format", "coco",
           "--steps", str(steps), "--max-tiles", str(tiles), "--batch-size", "4", "--no-progress", "--tissue", "ovarian",
           *(["--model", model] if model else []), *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args()

    from wsi_cosynth.demo import build_demo_slide

    results: dict = {"tiles": args.tiles, "in_process": {}, "workers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        slide = build_demo_slide(Path(tmp) / "demo")
        for steps in args.steps:
            seconds = run_export(slide, Path(tmp) / f"s{steps}", args.model, steps, args.tiles, [])
            results["in_process"][steps] = {"seconds": round(seconds, 1), "tiles_per_s": round(args.tiles / seconds, 3)}
            print(f"in-process, {steps:4d} steps: {seconds:7.1f} s  {args.tiles / seconds:.3f} tiles/s", flush=True)
        if not args.skip_workers:
            steps = args.steps[0]
            for workers in (1, 2):
                seconds = run_export(slide, Path(tmp) / f"w{workers}", args.model, steps, args.tiles,
                                     ["--workers", str(workers), "--threads", "1"])
                results["workers"][workers] = {"seconds": round(seconds, 1), "tiles_per_s": round(args.tiles / seconds, 3)}
                print(f"{workers} Dask worker(s), {steps} steps: {seconds:7.1f} s  {args.tiles / seconds:.3f} tiles/s",
                      flush=True)
            w = results["workers"]
            results["speedup_2_vs_1_workers"] = round(w[1]["seconds"] / w[2]["seconds"], 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
