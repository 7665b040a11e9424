"""Convert the 432 CoNSeP tiles into each written format: tiles/s and peak memory per format.

Each measurement runs in its own subprocess (peak RSS from ``resource.getrusage``), streaming
tiles from disk (read + write, as ``wsi-cosynth convert`` does). PanNuke is also run on 4x the
tiles (the 432 repeated under new names) to show that its memory does not grow with N.
The last line printed is one JSON object with all numbers.

Then (``--pairs N``, default 3) COCO-RLE against the conversion as a user would script it,
single-threaded (PIL for images, pycocotools per instance), once saving PNGs with PIL's default
``save`` (zlib level 6: the fair user script) and once at level 1 (Pillow's fastest compressing
level, which our writers used before ``wsi_cosynth/png.py``), interleaved in separate processes;
the ratio within each repeat is printed, and each run's CPU time per tile (user + system, all
threads). The load (uptime) is printed before and after.

Usage: python benchmarks/convert_formats.py [--data ../shared/data/consep/train] [--repeat-pannuke 4] [--pairs 3] [--pairs-only]
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
def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
from wsi_cosynth.exporters import open_writer, read_dataset
from wsi_cosynth.taxonomy import get_taxonomy
src, fmt, opts, repeat, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
# The libraries the single-thread script imports before its clock starts, so both clocks start
# after the same imports (our own lazy imports stay inside the timed loop).
import numpy, scipy.io, PIL.Image, pycocotools.mask  # noqa: E401,F401
def tiles():
    for r in range(repeat):
        for t in read_dataset(src, "consep"):
            yield t if r == 0 else replace(t, provenance=replace(t.provenance, name=f"{t.provenance.name}_r{r}"))
t0, c0 = time.perf_counter(), cpu_s()
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
print(json.dumps({"tiles": n, "seconds": dt, "tiles_per_s": n / dt, "cpu_ms_per_tile": (cpu_s() - c0) / n * 1e3,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# The conversion as a user would script it, single-threaded: PIL for images, pycocotools for RLE.
BASELINE = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np, scipy.io
from PIL import Image
from pycocotools import mask as mask_utils
src, out, level = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0, c0 = time.perf_counter(), cpu_s()
(out / "images").mkdir(parents=True)
images, anns = [], []
for path in sorted((src / "images").iterdir()):
    stem = path.stem
    image = Image.open(path).convert("RGB")
    image.save(out / "images" / f"{stem}.png", compress_level=level)  # PIL's default save is level 6
    inst = np.load(src / "inst" / f"{stem}.npy")
    types = scipy.io.loadmat(src / "type_mat" / f"{stem}.mat")["inst_type"].reshape(-1)
    image_id = len(images) + 1
    images.append({"id": image_id, "file_name": f"{stem}.png", "height": inst.shape[0], "width": inst.shape[1]})
    ids = np.unique(inst)
    for rank, k in enumerate(ids[ids > 0]):  # these tiles' inst_type rows follow the sorted ids
        rle = mask_utils.encode(np.asfortranarray((inst == k).astype(np.uint8)))
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(types[rank]), "iscrowd": 0,
                     "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
cats = [{"id": i, "name": str(i)} for i in range(1, 5)]
(out / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
dt = time.perf_counter() - t0
print(json.dumps({"tiles": len(images), "seconds": dt, "tiles_per_s": len(images) / dt,
                  "cpu_ms_per_tile": (cpu_s() - c0) / len(images) * 1e3,
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
    ap.add_argument("--pairs", type=int, default=3,
                    help="interleaved coco-rle vs single-thread pycocotools+PIL script pairs (0: none)")
    ap.add_argument("--pairs-only", action="store_true", help="only the paired comparison")
    args = ap.parse_args()
    runs = [] if args.pairs_only else RUNS + [(f"pannuke-x{args.repeat_pannuke}", "pannuke", {}, args.repeat_pannuke)]
    results = {}
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("load before:", load_before, flush=True)
    pairs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        labels = ("coco-rle", "script-png6", "script-png1")
        for rep in range(args.pairs):
            pair = {}
            for label in (labels if rep % 2 == 0 else labels[::-1]):
                out = Path(tmp) / f"pair{rep}-{label}"
                argv = ([sys.executable, "-c", BASELINE, str(args.data), str(out), label[-1]] if label.startswith("script") else
                        [sys.executable, "-c", CHILD, str(args.data), "coco", json.dumps({"segmentation": "rle"}), "1", str(out)])
                proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
                if proc.returncode != 0:
                    raise SystemExit(f"{label} failed:\n{proc.stderr}")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                pair[label], pair[f"{label}_cpu_ms"] = res["tiles_per_s"], res["cpu_ms_per_tile"]
                print(f"  repeat {rep + 1} {label:12s} {pair[label]:7.1f} tiles/s  {res['cpu_ms_per_tile']:5.1f} ms CPU/tile",
                      flush=True)
            pair["ratio_png1"] = pair["coco-rle"] / pair["script-png1"]
            pair["ratio_png6"] = pair["coco-rle"] / pair["script-png6"]
            pairs.append(pair)
        for key, what in (("ratio_png6", "PIL's default save, level 6"), ("ratio_png1", "PIL level 1")):
            if pairs:
                ratios = sorted(p[key] for p in pairs)
                listed = ", ".join(f"{p[key]:.2f}" for p in pairs)
                print(f"coco-rle / single-thread pycocotools+PIL script ({what}): {listed}; median {ratios[len(ratios) // 2]:.2f}x")
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
                  f"{res['cpu_ms_per_tile']:5.1f} ms CPU/tile peak RSS {res['peak_rss_mib']:7.1f} MiB", flush=True)
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("load after:", load_after)
    print(json.dumps({"benchmark": "convert_formats", "source": str(args.data), "cpus": os.cpu_count(),
                      "results": results, "pairs": pairs, "load_before": load_before, "load_after": load_after}))


if __name__ == "__main__":
    main()
