"""Real-export throughput and peak memory as the slide grows (memory should stay flat).

For each generated Aperio-style pyramid (levels 1, 4, 16; 0.25 um/px; QuPath GeoJSON sidecar
with one elliptical nucleus every 32 px) and for the MoNuSAC slides, a fresh subprocess runs
``export_real(..., fmt="coco", mpp=0.5)`` and reports tiles/s and its peak RSS. The annotation
table grows with the slide (as real ones do); the per-tile pipeline does not.
Prints a table, then one JSON line.

    .venv/bin/python benchmarks/slide_export.py [--sizes 2048 4096 8192]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
DATA = REPO.parent / "shared" / "data"

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
from wsi_cosynth.pipeline import export_real
slide, ann, out, mpp, tax = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
t0 = time.perf_counter()
s = export_real(slide, None if ann == "-" else ann, out, "coco", mpp=mpp, taxonomy=tax, sidecar=ann != "-")
dt = time.perf_counter() - t0
# VmHWM belongs to this process image (reset by exec); ru_maxrss would carry the parent's peak.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"tiles": s.n_tiles, "nuclei": s.n_nuclei, "seconds": dt, "peak_rss_mb": hwm / 1024}))
"""


def make_slide(folder: Path, side: int, seed: int) -> Path:
    from slide_fixtures import synthetic_he, write_svs

    # A 1024-px H&E-like patch repeated: cheap to make at any size, realistic to decode.
    patch = synthetic_he(1024, 1024, seed=seed, tissue_fraction=1.0)
    reps = -(-side // 1024)
    image = np.tile(patch, (reps, reps, 1))[:side, :side]
    image[:, : side // 8] = 245  # some glass for the tissue mask
    path = write_svs(folder / f"gen{side}.svs", image, mpp=0.25, downsamples=(1, 4, 16))
    feats = []
    for y in range(16, side - 16, 32):
        for x in range(side // 8 + 16, side - 16, 32):
            t = np.linspace(0, 2 * np.pi, 17)[:-1]
            ring = np.stack([x + 9 * np.cos(t), y + 6 * np.sin(t)], axis=1).round(2).tolist()
            ring.append(ring[0])
            feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                          "properties": {"objectType": "detection", "classification": {"name": "Epithelial", "color": [255, 0, 0]}}})
    (folder / f"gen{side}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def run_child(slide: Path, ann: Path | None, out: Path, mpp: float, tax: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(slide), str(ann) if ann else "-", str(out), str(mpp), tax],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for side in args.sizes:
            slide = make_slide(tmp, side, seed=side)
            r = run_child(slide, tmp / f"gen{side}.geojson", tmp / f"out{side}", 0.5, "lizard")
            results.append({"slide": f"generated {side}x{side}", "level0_mpix": side * side / 1e6, **r})
            # Same slide without annotations: isolates the per-tile read/write path.
            r = run_child(slide, None, tmp / f"img{side}", 0.5, "lizard")
            results.append({"slide": f"generated {side} no annot.", "level0_mpix": side * side / 1e6, **r})
        for i in (1, 2):
            svs = DATA / "monusac" / f"A9K0_{i}.svs"
            if svs.is_file():
                r = run_child(svs, DATA / "monusac" / f"A9K0_{i}.xml", tmp / f"mon{i}", 0.25, "monusac")
                results.append({"slide": f"MoNuSAC A9K0_{i} (0.25 mpp)", "level0_mpix": None, **r})
    print(f"{'slide':28s} {'tiles':>6s} {'nuclei':>8s} {'s':>7s} {'tiles/s':>8s} {'peak RSS MB':>12s}")
    for r in results:
        r["tiles_per_s"] = r["tiles"] / r["seconds"]
        print(f"{r['slide']:28s} {r['tiles']:6d} {r['nuclei']:8d} {r['seconds']:7.2f} {r['tiles_per_s']:8.1f} {r['peak_rss_mb']:12.0f}")
    gen = [r for r in results if r["slide"].startswith("generated") and "no annot" not in r["slide"]]
    bare = [r for r in results if "no annot" in r["slide"]]
    summary = {
        "benchmark": "slide_export",
        "results": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in results],
        "peak_rss_growth_mb": round(gen[-1]["peak_rss_mb"] - gen[0]["peak_rss_mb"], 1) if len(gen) > 1 else None,
        "peak_rss_growth_no_annotations_mb": round(bare[-1]["peak_rss_mb"] - bare[0]["peak_rss_mb"], 1) if len(bare) > 1 else None,
        "area_ratio": (args.sizes[-1] / args.sizes[0]) ** 2 if len(gen) > 1 else None,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
