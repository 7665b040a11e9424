"""Tiling throughput of a plain (strip) TIFF against an OpenSlide pyramid of the same image.

One generated H&E-like image (``--side`` px square, 0.25 um/px, smooth stain field with dark
nuclei) is written twice:

- ``plain.tif``: a single-level strip TIFF as MoNuSeg and lab exports are (``--rowsperstrip``
  rows per strip, ``--compression`` none / lzw / jpeg), opened by the plain-image backend
  (``slide/plain.py``: only the strips a window touches are read and decoded, decoded strips
  cached);
- ``pyramid.svs``: an Aperio-style pyramid (levels 1/4, 256-px JPEG Q90 tiles), opened by
  OpenSlide (with the reader's direct JPEG path where it applies).

The task, for each: ``plan_slide`` (tissue detection included) + ``iter_slide_tiles`` over every
256-px tile at ``--mpp`` (0.25 = level 0 as stored, 0.5 = 2x downsample), min tissue 0, kept in
memory. Runs are separate processes, interleaved (A B B A ...); each times its own work (imports
excluded). Prints tiles/s per run, the medians and their ratio, ``uptime`` before and after, and
one JSON line.

    .venv/bin/python benchmarks/plain_tiff_tiling.py [--side 8192] [--repeats 3] [--mpp 0.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
from wsi_cosynth.pipeline.planning import plan_slide, iter_slide_tiles
slide, mpp = sys.argv[1], float(sys.argv[2])
t0 = time.perf_counter()
n, check = 0, 0
with plan_slide(slide, None, mpp=mpp, tile_size=256, min_tissue=0.0, sidecar=False) as plan:
    backend = type(plan.reader._source).__name__
    for tile in iter_slide_tiles(plan):
        n += 1
        check += int(tile.image[128, 128, 0])
dt = time.perf_counter() - t0
print(json.dumps({"tiles": n, "seconds": dt, "backend": backend}))
"""


def make_image(side: int, seed: int = 0) -> np.ndarray:
    """(side, side, 3) uint8 H&E-like image, built in 1024-px blocks."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    pink, purple = np.array([235, 160, 200.0]), np.array([120, 60, 150.0])
    out = np.empty((side, side, 3), dtype=np.uint8)
    block = 1024
    for r in range(0, side, block):
        for c in range(0, side, block):
            h, w = min(block, side - r), min(block, side - c)
            field = ndimage.gaussian_filter(rng.random((h, w)), 2.0)
            field = (field - field.min()) / max(float(np.ptp(field)), 1e-9)
            nuclei = ndimage.gaussian_filter((rng.random((h, w)) > 0.9965).astype(float), 3.0)
            field = np.clip(field * 0.6 + nuclei * 40, 0, 1)
            rgb = pink * (1 - field[..., None]) + purple * field[..., None] + rng.normal(0, 6, (h, w, 1))
            out[r:r + h, c:c + w] = np.clip(rgb, 0, 255).astype(np.uint8)
    return out


def write_inputs(folder: Path, side: int, compression: str, rowsperstrip: int) -> tuple[Path, Path]:
    import tifffile

    from wsi_cosynth.slide.svs_writer import write_aperio_svs

    image = make_image(side)
    plain = folder / "plain.tif"
    tifffile.imwrite(plain, image, photometric="rgb", rowsperstrip=rowsperstrip,
                     compression=None if compression == "none" else compression,
                     resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    pyramid = write_aperio_svs(folder / "pyramid.svs", image, mpp=0.25, downsamples=(1, 4), quality=90)
    return plain, pyramid


def _run(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=8192, help="image side in pixels (default 8192)")
    ap.add_argument("--mpp", type=float, default=0.5, help="tile resolution (0.25 = as stored; default 0.5)")
    ap.add_argument("--compression", choices=("none", "lzw", "jpeg"), default="lzw", help="plain TIFF strips")
    ap.add_argument("--rowsperstrip", type=int, default=16, help="rows per strip of the plain TIFF")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"load before: {_uptime()}")
    with tempfile.TemporaryDirectory() as tmp:
        plain, pyramid = write_inputs(Path(tmp), args.side, args.compression, args.rowsperstrip)
        sizes = {"plain_mb": plain.stat().st_size / 2**20, "pyramid_mb": pyramid.stat().st_size / 2**20}
        rates: dict[str, list[float]] = {"plain": [], "pyramid": []}
        backends: dict[str, str] = {}
        order = ["plain", "pyramid"]
        for k in range(args.repeats):
            for name in order if k % 2 == 0 else order[::-1]:
                res = _run(str(plain if name == "plain" else pyramid), str(args.mpp))
                rate = res["tiles"] / res["seconds"]
                rates[name].append(rate)
                backends[name] = res["backend"]
                print(f"  {name:8s} ({res['backend']}): {res['tiles']} tiles in {res['seconds']:.2f} s = {rate:.1f} tiles/s")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"load after: {_uptime()}")
    print(f"| input | backend | tiles/s (median of {args.repeats}) |")
    print("|---|---|---|")
    print(f"| strip TIFF ({args.compression}, {args.rowsperstrip} rows/strip, {sizes['plain_mb']:.0f} MB) | "
          f"{backends['plain']} | {med['plain']:.1f} |")
    print(f"| Aperio pyramid (JPEG Q90, {sizes['pyramid_mb']:.0f} MB) | {backends['pyramid']} | {med['pyramid']:.1f} |")
    print(f"plain / pyramid: {med['plain'] / med['pyramid']:.2f}")
    print(json.dumps({"side": args.side, "mpp": args.mpp, "compression": args.compression,
                      "rowsperstrip": args.rowsperstrip, "tiles_per_s": med, "rates": rates, **sizes}))


if __name__ == "__main__":
    main()
