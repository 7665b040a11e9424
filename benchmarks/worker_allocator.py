"""Sampling speed under the allocator setting a Dask nanny gives its workers.

A nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``. This script samples the same
batch (``--tiles`` resampled CoNSeP layouts, ``--steps`` steps, one torch thread, the bundled
model unless ``--model``) in fresh processes: without the variable, with it, and with it plus
:func:`wsi_cosynth.pipeline.worker.keep_tensors_in_heap` (what a synthesis task calls); each
reports the CPU seconds of its second batch (the first warms up), ``--repeats`` times.

    .venv/bin/python benchmarks/worker_allocator.py [--model DIR] [--tiles 4] [--steps 6] [--repeats 2]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
import numpy as np, torch
from pathlib import Path
from wsi_cosynth.api import load_model
from wsi_cosynth.layouts.point_process import load_layout_model, sample_layout
from wsi_cosynth.pipeline.jobs import make_batches, plan_jobs
from wsi_cosynth.pipeline.layouts_for_slide import default_layout_model_path
from wsi_cosynth.pipeline.worker import SamplingSpec, keep_tensors_in_heap, sample_tiles
from wsi_cosynth.records import Layout, Provenance

model_path, tiles, steps, fix = sys.argv[1] or None, int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
if fix:
    keep_tensors_in_heap()
torch.set_num_threads(1)
model = load_model(model_path, device="cpu")
size, tax = model.tile_size, model.taxonomy
rng = np.random.default_rng(0)
lm = load_layout_model(default_layout_model_path())
layouts = []
for i in range(tiles):
    d = sample_layout(lm, (size, size), rng, name=f"t{i}")
    layouts.append(Layout(xy_tile=d.xy_tile, classes=np.clip(d.classes, 1, tax.n_classes), size=(size, size),
                          taxonomy=tax, provenance=Provenance(name=f"t{i}", tissue="colon")))
batch = make_batches(plan_jobs(layouts, 1), tiles, seed=0)[0]
spec = SamplingSpec(model_path="", steps=steps)
sample_tiles(model, batch, spec, "cpu")
start = time.process_time()
sample_tiles(model, batch, spec, "cpu")
print(time.process_time() - start)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="")
    parser.add_argument("--tiles", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    cases = {"no MALLOC_TRIM_THRESHOLD_": (base, "0"),
             "MALLOC_TRIM_THRESHOLD_=65536 (a Dask nanny's)": ({**base, "MALLOC_TRIM_THRESHOLD_": "65536"}, "0"),
             "same + keep_tensors_in_heap()": ({**base, "MALLOC_TRIM_THRESHOLD_": "65536"}, "1")}
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits every case alike
        for name, (env, fix) in cases.items():
            out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.tiles), str(args.steps), fix],
                                 env=env, capture_output=True, text=True, check=True).stdout
            seconds[name].append(float(out.strip().splitlines()[-1]))
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    for name, values in seconds.items():
        print(f"{name:48s} CPU s per batch: {', '.join(f'{v:.2f}' for v in values)}")
    print(load)
    print(json.dumps({"tiles": args.tiles, "steps": args.steps, "load": load,
                      "cpu_s": {k: [round(v, 2) for v in vs] for k, vs in seconds.items()},
                      "median": {k: round(statistics.median(vs), 2) for k, vs in seconds.items()}}))


if __name__ == "__main__":
    main()
