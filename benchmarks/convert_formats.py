"""Convert the 432 CoNSeP tiles into each written format: tiles/s and peak memory per format.

Each measurement runs in its own subprocess (peak RSS from ``resource.getrusage``), streaming
tiles from disk (read + write, as ``wsi-cosynth convert`` does). PanNuke is also run on 4x the
tiles (the 432 repeated under new names) to show that its memory does not grow with N.
The last line printed is one JSON object with all numbers.

Usage: python benchmarks/convert_formats.py [--data ../shared/data/consep/train] [--repeat-pannuke 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("WSI_COSYNTH_DATA", REPO.parent / "shared" / "data")) / "consep" / "train"

CHILD = r"""
import json, resource, sys, time
from dataclasses import replace
from wsi_cosynth.exporters import open_writer, read_dataset
from wsi_cosynth.taxonomy import get_taxonomy
src, fmt, opts, repeat, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def tiles():
    for r in range(repeat):
        for t in read_dataset(src, "consep"):
            yield t if r == 0 else replace(t, provenance=replace(t.provenance, name=f"{t.provenance.name}_r{r}"))
t0 = time.perf_counter()
n = 0
if fmt == "read-only":
    for t in tiles():
        n += 1
else:
    with open_writer(fmt, out, get_taxonomy("consep"), **opts) as w:
        for t in tiles():
            w.add(t)
            n += 1
dt = time.perf_counter() - t0
print(json.dumps({"tiles": n, "seconds": dt, "tiles_per_s": n / dt,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

RUNS = [
    ("read-only", "read-only", {}, 1),
    ("coco-rle", "coco", {"segmentation": "rle"}, 1),
    ("coco-polygon", "coco", {"segmentation": "polygon"}, 1),
    ("lizard", "lizard", {}, 1),
    ("pannuke", "pannuke", {}, 1),
    ("geojson", "geojson", {}, 1),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeat-pannuke", type=int, default=4)
    args = ap.parse_args()
    runs = RUNS + [(f"pannuke-x{args.repeat_pannuke}", "pannuke", {}, args.repeat_pannuke)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, fmt, opts, repeat in runs:
            out = Path(tmp) / label
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.data), fmt, json.dumps(opts), str(repeat), str(out)],
                capture_output=True, text=True, cwd=REPO,
            )
            if proc.returncode != 0:
                raise SystemExit(f"{label} failed:\n{proc.stderr}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            if out.exists():
                res["output_mib"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
            results[label] = res
            print(f"{label:16s} {res['tiles']:5d} tiles {res['tiles_per_s']:7.1f} tiles/s "
                  f"peak RSS {res['peak_rss_mib']:7.1f} MiB", flush=True)
    print(json.dumps({"benchmark": "convert_formats", "source": str(args.data), "cpus": os.cpu_count(),
                      "results": results}))


if __name__ == "__main__":
    main()
