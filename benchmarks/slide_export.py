"""Real-export throughput and peak memory as the slide grows (memory should stay flat).

For each generated Aperio-style pyramid (levels 1, 4, 16; 0.25 um/px; QuPath GeoJSON sidecar
with one elliptical nucleus every 32 px) and for the MoNuSAC slides, a fresh subprocess runs
``export_real(..., fmt, mpp=0.5)`` for each format (COCO and GeoJSON, interleaved) and reports
tiles/s and its peak RSS; the ratio of each format's tiles/s to COCO's in the same repeat; and
the peak memory per loaded nucleus above the same slide exported without annotations. The
annotation table grows with the slide (as real ones do); the per-tile pipeline does not.
Prints a table, then one JSON line.

    .venv/bin/python benchmarks/slide_export.py [--sizes 2048 4096 8192] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
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
slide, ann, out, mpp, tax, fmt = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5], sys.argv[6]
t0 = time.perf_counter()
s = export_real(slide, None if ann == "-" else ann, out, fmt, mpp=mpp, taxonomy=tax, sidecar=ann != "-")
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


def run_child(slide: Path, ann: Path | None, out: Path, mpp: float, tax: str, fmt: str = "coco") -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(slide), str(ann) if ann else "-", str(out), str(mpp), tax, fmt],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--formats", nargs="+", default=["coco", "geojson"],
                        help="formats run interleaved per slide (ratios are to the first)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats per slide (A B ... then reversed)")
    parser.add_argument("--skip-monusac", action="store_true")
    args = parser.parse_args()
    results = []
    print("load before:", _uptime(), flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for side in args.sizes:
            slide = make_slide(tmp, side, seed=side)
            for rep in range(args.repeats):
                order = args.formats if rep % 2 == 0 else args.formats[::-1]
                for fmt in order:
                    r = run_child(slide, tmp / f"gen{side}.geojson", tmp / f"out{side}", 0.5, "lizard", fmt)
                    results.append({"slide": f"generated {side}x{side}", "fmt": fmt, "rep": rep, "side": side, **r})
                    print(f"  {side} {fmt} rep {rep + 1}: {r['tiles'] / r['seconds']:.1f} tiles/s, {r['peak_rss_mb']:.0f} MB", flush=True)
            # Same slide without annotations: the base the per-nucleus memory is measured above.
            r = run_child(slide, None, tmp / f"img{side}", 0.5, "lizard", args.formats[0])
            results.append({"slide": f"generated {side} no annot.", "fmt": args.formats[0], "rep": 0, "side": side, **r})
        if not args.skip_monusac:
            for i in (1, 2):
                svs = DATA / "monusac" / f"A9K0_{i}.svs"
                if svs.is_file():
                    for fmt in args.formats:
                        r = run_child(svs, DATA / "monusac" / f"A9K0_{i}.xml", tmp / f"mon{i}", 0.25, "monusac", fmt)
                        results.append({"slide": f"MoNuSAC A9K0_{i} (0.25 mpp)", "fmt": fmt, "rep": 0, "side": None, **r})
    load_after = _uptime()
    print("load after:", load_after)
    print(f"{'slide':28s} {'fmt':8s} {'tiles':>6s} {'nuclei':>8s} {'s':>7s} {'tiles/s':>8s} {'peak RSS MB':>12s}")
    for r in results:
        r["tiles_per_s"] = r["tiles"] / r["seconds"]
        print(f"{r['slide']:28s} {r['fmt']:8s} {r['tiles']:6d} {r['nuclei']:8d} {r['seconds']:7.2f} {r['tiles_per_s']:8.1f} {r['peak_rss_mb']:12.0f}")
    # Format ratios per slide and repeat (each run paired with the first format's run of that repeat).
    ratios: dict[str, list[float]] = {}
    for side in args.sizes:
        for rep in range(args.repeats):
            runs = {r["fmt"]: r for r in results if r["side"] == side and r["rep"] == rep and "no annot" not in r["slide"]}
            for fmt in args.formats[1:]:
                ratios.setdefault(fmt, []).append(runs[fmt]["tiles_per_s"] / runs[args.formats[0]]["tiles_per_s"])
    for fmt, vals in ratios.items():
        print(f"{fmt} / {args.formats[0]} tiles/s: {', '.join(f'{v:.2f}' for v in vals)} (sizes {args.sizes} x {args.repeats}); "
              f"median {statistics.median(vals):.2f}x")
    # Peak memory per loaded nucleus above the same slide without annotations.
    per_nucleus = {}
    for side in args.sizes:
        bare = next(r for r in results if r["side"] == side and "no annot" in r["slide"])
        for r in results:
            if r["side"] == side and "no annot" not in r["slide"] and r["nuclei"]:
                kib = (r["peak_rss_mb"] - bare["peak_rss_mb"]) * 1024 / r["nuclei"]
                per_nucleus.setdefault(side, []).append(round(kib, 3))
        print(f"peak above base per loaded nucleus, {side}^2 ({bare['slide']}): {per_nucleus.get(side)} KiB")
    summary = {
        "benchmark": "slide_export",
        "results": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in results],
        "format_ratios": {k: [round(v, 3) for v in vals] for k, vals in ratios.items()},
        "peak_kib_per_nucleus": per_nucleus,
        "load_after": load_after,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
