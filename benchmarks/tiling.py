"""Tiling throughput: wsi-cosynth against a plain OpenSlide loop on the same generated slide.

The slide: a 20000 x 20000 Aperio-style pyramid (0.25 um/px, levels 1/4/16, 256-px JPEG Q90
tiles, ~41% tissue), generated once tile by tile into ``--cache`` and reused. The task: every
256-px tile at 0.5 um/px with tissue fraction >= 0.5, kept in memory or written as PNG.

Runs, each in its own process, interleaved (A B B A ...) so load drift hits both alike:

- ``wsi-cosynth``: ``plan_slide`` (tissue detection from the lowest level included) +
  ``iter_slide_tiles`` (direct reduced-scale JPEG decode, thread pool over the cores); with
  ``--png``: ``write_tiles`` (PNGs, index, mask, overview).
- ``openslide``: the loop users write, given wsi-cosynth's tile positions for free (not timed):
  ``read_region`` 512 px at level 0, ``convert("RGB")``, PIL ``resize`` to 256 (BOX, the area
  filter), ``np.asarray``; with ``--png`` each tile saved with PIL (compress_level 1, as ours).
- ``histolab`` / ``tiatoolbox``: run when importable, else reported as skipped.

Each process times its own work (imports excluded); the ratio of each pair is printed, then the
median. Prints a table, then one JSON line. ``uptime`` is printed before and after.

    .venv/bin/python benchmarks/tiling.py [--repeats 3] [--png] [--side 20000]
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
TILE = 256

CHILD_WSI = r"""
import json, sys, time, tempfile
from wsi_cosynth.pipeline.planning import plan_slide, iter_slide_tiles
from wsi_cosynth.pipeline.tiling import write_tiles
slide, png = sys.argv[1], sys.argv[2] == "1"
t0 = time.perf_counter()
if png:
    with tempfile.TemporaryDirectory() as tmp:
        n = write_tiles(slide, None, tmp + "/out", mpp=0.5, tile_size=256)["n_tiles"]
        dt = time.perf_counter() - t0
else:
    n, check = 0, 0
    with plan_slide(slide, None, mpp=0.5, tile_size=256) as plan:
        for tile in iter_slide_tiles(plan):
            n += 1
            check += int(tile.image[128, 128, 0])
    dt = time.perf_counter() - t0
print(json.dumps({"tiles": n, "seconds": dt}))
"""

CHILD_OPENSLIDE = r"""
import json, sys, time, tempfile, os
import numpy as np, openslide
from PIL import Image
slide, png, positions = sys.argv[1], sys.argv[2] == "1", json.load(open(sys.argv[3]))
tmp = tempfile.mkdtemp() if png else None
t0 = time.perf_counter()
osr = openslide.OpenSlide(slide)
n, check = 0, 0
for x, y in positions:
    img = osr.read_region((x, y), 0, (512, 512)).convert("RGB").resize((256, 256), Image.Resampling.BOX)
    if png:
        img.save(os.path.join(tmp, f"{x}_{y}.png"), compress_level=1)
    else:
        check += int(np.asarray(img)[128, 128, 0])
    n += 1
dt = time.perf_counter() - t0
print(json.dumps({"tiles": n, "seconds": dt}))
"""

CHILD_HISTOLAB = r"""
import json, sys, time, tempfile
from histolab.slide import Slide
from histolab.tiler import GridTiler
slide = sys.argv[1]
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    s = Slide(slide, processed_path=tmp)
    tiler = GridTiler(tile_size=(512, 512), level=0, check_tissue=False)
    n = 0
    for tile, _ in tiler._tiles_generator(s):
        tile.image.convert("RGB").resize((256, 256)); n += 1
    dt = time.perf_counter() - t0
print(json.dumps({"tiles": n, "seconds": dt}))
"""

CHILD_TIATOOLBOX = r"""
import json, sys, time
from tiatoolbox.tools.patchextraction import get_patch_extractor
from tiatoolbox.wsicore.wsireader import WSIReader
slide = sys.argv[1]
t0 = time.perf_counter()
reader = WSIReader.open(slide)
ex = get_patch_extractor("slidingwindow", input_img=reader, patch_size=(256, 256), resolution=0.5, units="mpp")
n = sum(1 for _ in ex)
dt = time.perf_counter() - t0
print(json.dumps({"tiles": n, "seconds": dt}))
"""


def make_slide(path: Path, side: int, *, seed: int = 0) -> Path:
    """Write the benchmark pyramid tile by tile (never the whole image in memory)."""
    import tifffile
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    # Tissue: a few ellipses on a 1/64 grid, ~41% of the area.
    g = -(-side // 64)
    yy, xx = np.mgrid[0:g, 0:g] / g
    mask = np.zeros((g, g), dtype=bool)
    for cx, cy, rx, ry in [(0.3, 0.35, 0.21, 0.27), (0.68, 0.62, 0.24, 0.21), (0.62, 0.22, 0.115, 0.095), (0.25, 0.78, 0.115, 0.095)]:
        mask |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    # A handful of H&E-like texture patches (smooth stain field + dark nuclei), reused by hash.
    pink, purple = np.array([235, 160, 200.0]), np.array([120, 60, 150.0])
    patches = []
    for _ in range(8):
        field = ndimage.gaussian_filter(rng.random((TILE, TILE)), 2.0)
        field = (field - field.min()) / np.ptp(field)
        nuclei = ndimage.gaussian_filter((rng.random((TILE, TILE)) > 0.9965).astype(float), 3.0)
        field = np.clip(field * 0.6 + nuclei * 40, 0, 1)
        rgb = pink * (1 - field[..., None]) + purple * field[..., None] + rng.normal(0, 6, (TILE, TILE, 1))
        patches.append(np.clip(rgb, 0, 255).astype(np.uint8))
    glass = np.full((TILE, TILE, 3), 242, dtype=np.uint8)

    def tiles(ds: int):
        w = -(-side // ds)
        for r in range(-(-w // TILE)):
            for c in range(-(-w // TILE)):
                # Mask pixels this tile covers (1/64 grid), nearest-upsampled to the tile.
                span = TILE * ds / 64
                r0, c0 = int(r * span), int(c * span)
                sub = mask[r0:max(r0 + 1, int((r + 1) * span)), c0:max(c0 + 1, int((c + 1) * span))]
                if not sub.any():
                    yield glass
                    continue
                idx = np.minimum((np.arange(TILE) * sub.shape[0]) // TILE, sub.shape[0] - 1)
                jdx = np.minimum((np.arange(TILE) * sub.shape[1]) // TILE, sub.shape[1] - 1)
                m = sub[idx][:, jdx] if sub.size else np.zeros((TILE, TILE), bool)
                yield np.where(m[..., None], patches[(r * 7 + c * 13 + ds) % 8], glass)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with tifffile.TiffWriter(tmp, bigtiff=False) as tif:
        for i, ds in enumerate((1, 4, 16)):
            w = -(-side // ds)
            desc = (f"Aperio Image Library v12.0.15\n{side}x{side} [0,0 {side}x{side}] (256x256) JPEG/RGB Q=90|AppMag = 40|MPP = 0.25"
                    if i == 0 else f"Aperio Image Library v12.0.15\n{side}x{side} -> {w}x{w}")
            tif.write(tiles(ds), shape=(w, w, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                      compression="jpeg", compressionargs={"level": 90}, description=desc, metadata=None)
    tmp.rename(path)
    return path


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _available(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--png", action="store_true", help="write every tile as PNG instead of keeping it in memory")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "wsi-cosynth-bench")
    args = ap.parse_args()
    slide = args.cache / f"tiling{args.side}.svs"
    if not slide.exists():
        print(f"generating {slide} ...", flush=True)
        make_slide(slide, args.side)
    from wsi_cosynth.pipeline.planning import plan_slide

    with plan_slide(slide, None, mpp=0.5, tile_size=TILE) as plan:
        positions = [[int(x), int(y)] for x, y in zip(plan.grid.x_level0, plan.grid.y_level0)]
        tissue = plan.tissue_mask.fraction
    pos_file = args.cache / f"positions{args.side}.json"
    pos_file.write_text(json.dumps(positions))
    png = "1" if args.png else "0"
    runs = {"wsi-cosynth": (CHILD_WSI, (str(slide), png)), "openslide": (CHILD_OPENSLIDE, (str(slide), png, str(pos_file)))}
    extra = {"histolab": CHILD_HISTOLAB, "tiatoolbox": CHILD_TIATOOLBOX}
    skipped = [name for name in extra if args.png or not _available(name)]
    for name in extra:
        if name not in skipped:
            runs[name] = (extra[name], (str(slide),))
    print(f"slide {slide.name}: {args.side}^2 px, tissue {100 * tissue:.1f}%, {len(positions)} tissue tiles; "
          f"{'PNG writing' if args.png else 'in memory'}; skipped (not installed{' / not PNG' if args.png else ''}): "
          f"{', '.join(skipped) or 'none'}")
    load_before = _uptime()
    print("load before:", load_before, flush=True)
    results: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(args.repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            code, cargs = runs[name]
            r = _run(code, *cargs)
            results[name].append(r["tiles"] / r["seconds"])
            print(f"  rep {rep + 1} {name:12s} {r['tiles']} tiles {r['seconds']:.2f} s -> {results[name][-1]:.1f} tiles/s", flush=True)
    load_after = _uptime()
    print("load after:", load_after)
    ratios = [a / b for a, b in zip(results["wsi-cosynth"], results["openslide"])]
    print("\n| run | tiles/s per repeat | median | ratio to openslide loop |\n|---|---|---|---|")
    for name, vals in results.items():
        ratio = statistics.median(v / b for v, b in zip(vals, results["openslide"]))
        print(f"| {name} | {' / '.join(f'{v:.1f}' for v in vals)} | {statistics.median(vals):.1f} | {ratio:.2f}x |")
    print(f"\nwsi-cosynth / openslide per pair: {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}x")
    print(json.dumps({"benchmark": "tiling", "png": args.png, "side": args.side, "tiles": len(positions),
                      "tissue_fraction": tissue, "tiles_per_s": results, "ratio_pairs": ratios,
                      "ratio_median": statistics.median(ratios), "skipped": skipped,
                      "load_before": load_before, "load_after": load_after}))


if __name__ == "__main__":
    main()
