"""Region synthesis: seams, cost per area and memory of one fused sampling over a region, against
independent tiles stitched side by side, on a real annotated region.

Seams: the column (row) jump profile of an image, J[c] = mean over rows of |I[:, c+1] - I[:, c]|
(grey levels), each value divided by its local baseline (the median of J over the 8 columns
either side, itself excluded). A seam is a column that jumps far more than its neighbours. Reported:
the largest ratio at the tile-grid borders (multiples of the model's tile, where stitched tiles
meet and where fused windows would leave a grid), the largest elsewhere, and the largest
anywhere; for the real region too (real tissue's own floor).

Cost: seconds per Mpx of the fused run (sampling, decode, instances, TIFF and GeoJSON writing)
and of independent tiles (``wsi_cosynth.synthesize`` of one layout per tile of the grid covering
the region, watershed included), same model, same sampling settings, same process; the network
windows per Mpx of each.

Border vs inside (``--kid PICTURE``): KID against real crops of the region of 256-px crops
centred on the chunk borders of a chunked fused run and of crops that touch no chunk border (the
only borders that persist: the window grid moves at every step), read back from the picture a
previous run saved; the ratio border / inside should be ~1.

Memory (``--memory S``): the peak RSS of a fresh process synthesising a region of side S and one
of side 2S (4x the area) in chunks of ``--memory-chunk`` px.

    python benchmarks/region_synthesis.py --slide S.tif --annotations S.xml --slide-mpp 0.25
        --region X Y W H [--steps 8 --sampler dpmpp_2m --spacing trailing] [--schemes shift:32:cosine
        overlap:64:cosine shift:0:uniform] [--threads 2] [--picture /tmp/region.png] [--memory 512]

Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


# ------------------------------------------------------------------------------------ seam metric
def jump_profile(image: np.ndarray, axis: int) -> np.ndarray:
    """(W - 1,) mean absolute grey-level jump between adjacent columns (axis 1) or rows (axis 0)."""
    grey = np.asarray(image, dtype=np.float64).mean(axis=2)
    if axis == 0:
        grey = grey.T
    return np.abs(np.diff(grey, axis=1)).mean(axis=0)


def jump_ratios(profile: np.ndarray, half: int = 8) -> np.ndarray:
    """Each jump divided by the median of the ``half`` jumps either side of it (itself excluded)."""
    n = len(profile)
    out = np.ones(n)
    for i in range(n):
        around = np.concatenate([profile[max(0, i - half):i], profile[i + 1:i + 1 + half]])
        base = np.median(around) if len(around) else profile[i]
        out[i] = profile[i] / max(base, 1e-6)
    return out


def seam_report(image: np.ndarray, period: int) -> dict:
    """Largest jump ratios at multiples of ``period`` (borders), elsewhere and anywhere, columns and rows."""
    report = {}
    for name, axis in (("columns", 1), ("rows", 0)):
        ratios = jump_ratios(jump_profile(image, axis))
        borders = np.array([b - 1 for b in range(period, len(ratios) + 1, period)], dtype=int)
        near = np.zeros(len(ratios), bool)
        for b in borders:
            near[max(0, b - 1):b + 2] = True
        report[name] = {
            "border_max": round(float(ratios[borders].max()), 2) if len(borders) else None,
            "elsewhere_max": round(float(ratios[~near].max()), 2),
            "max": round(float(ratios.max()), 2),
            "argmax": int(ratios.argmax()) + 1,  # the seam lies before this column / row
        }
    return report


# ------------------------------------------------------------------------------------ runs
def read_level0(path: Path) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(str(path)) as s:
        return np.asarray(s.read_region((0, 0), 0, s.dimensions))[..., :3].copy()


def fused_run(args, scheme: str, overlap: int, weights: str, out: Path, chunk: int) -> dict:
    from wsi_cosynth.pipeline.region import RegionOptions, synthesize_region

    options = RegionOptions(steps=args.steps, sampler=args.sampler, spacing=args.spacing, scheme=scheme,
                            overlap=overlap, weights=weights, chunk=chunk, margin=args.margin, seed=args.seed,
                            batch_size=args.batch_size)
    start = time.perf_counter()
    result = synthesize_region(args.slide, out, annotations=args.annotations, region=tuple(args.region),
                               slide_mpp=args.slide_mpp, options=options, device="cpu", threads=args.threads,
                               overwrite=True, restart=True)
    seconds = time.perf_counter() - start
    mpx = result.size_hw[0] * result.size_hw[1] / 1e6
    return {"result": result, "seconds": seconds, "s_per_mpx": seconds / mpx, "windows_per_mpx": result.n_windows / mpx}


def independent_layouts(model, plan) -> list:
    """One layout per grid tile of the region, row-major."""
    from wsi_cosynth.records import Layout, Provenance

    s = model.tile_size
    h, w = plan.size_hw
    layouts = []
    for r in range(-(-h // s)):
        for c in range(-(-w // s)):
            inside = ((plan.xy[:, 0] >= c * s) & (plan.xy[:, 0] < (c + 1) * s) & (plan.xy[:, 1] >= r * s)
                      & (plan.xy[:, 1] < (r + 1) * s))
            layouts.append(Layout(plan.xy[inside] - [c * s, r * s], plan.classes[inside], (s, s), model.taxonomy,
                                  Provenance(name=f"t{r}_{c}", tissue=plan.tissue)))
    return layouts


def independent_tiles(args, model, plan) -> tuple[np.ndarray, dict]:
    """The region as a mosaic of independently sampled tiles (one layout per grid tile)."""
    import wsi_cosynth as wc

    s = model.tile_size
    h, w = plan.size_hw
    rows, cols = -(-h // s), -(-w // s)
    layouts = independent_layouts(model, plan)
    start = time.perf_counter()
    tiles = wc.synthesize(layouts, model, steps=args.steps, sampler=args.sampler, spacing=args.spacing, seed=args.seed,
                          batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    mosaic = np.zeros((rows * s, cols * s, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        mosaic[r * s:(r + 1) * s, c * s:(c + 1) * s] = tile.image
    mpx = h * w / 1e6
    evaluations = len(layouts) * args.steps  # network windows, as the fused run counts them
    return mosaic[:h, :w], {"seconds": seconds, "s_per_mpx": seconds / mpx, "windows_per_mpx": evaluations / mpx,
                            "tiles": len(layouts), "nuclei": int(sum(t.n_nuclei for t in tiles))}


def peak_memory(args, side: int) -> float:
    """Peak RSS in MiB of a fresh process synthesising a ``side`` x ``side`` px region.

    VmHWM of /proc/self/status: the high-water mark of this process image only (getrusage's
    ru_maxrss would also count the parent's pages the child was forked with before exec).
    """
    x, y = args.region[:2]
    code = (
        "import sys, re; from wsi_cosynth.pipeline.region import RegionOptions, synthesize_region\n"
        f"synthesize_region({args.slide!r}, sys.argv[1], annotations={args.annotations!r}, region=({x}, {y}, {side}, {side}),"
        f" slide_mpp={args.slide_mpp!r}, options=RegionOptions(steps={args.memory_steps}, sampler={args.sampler!r},"
        f" spacing={args.spacing!r}, chunk={args.memory_chunk}, margin={args.margin}, batch_size={args.batch_size}),"
        f" device='cpu', threads={args.threads}, overwrite=True, restart=True)\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", code, tmp], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def border_and_inside_crops(image: np.ndarray, borders: list[int], n: int, rng: np.random.Generator,
                            size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size, 3) crops centred on the vertical or horizontal ``borders`` lines (at random
    positions along them) and ``n`` crops that touch no border line, from an (H, W, 3) image."""
    h, w = image.shape[:2]
    half = size // 2
    on, off = [], []
    while len(on) < n:
        b = borders[int(rng.integers(len(borders)))]
        vertical = rng.random() < 0.5  # a column border (crop centred on x = b) or a row border
        along = int(rng.integers(0, (h if vertical else w) - size + 1))
        if vertical and half <= b <= w - half:
            on.append(image[along:along + size, b - half:b + half])
        elif not vertical and half <= b <= h - half:
            on.append(image[b - half:b + half, along:along + size])
    while len(off) < n:
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        if not any(y < b < y + size or x < b < x + size for b in borders):
            off.append(image[y:y + size, x:x + size])
    return np.stack(on), np.stack(off)


def window_border_lines(last_windows, window: int, size_hw: tuple[int, int]) -> tuple[list[int], list[int]]:
    """(columns, rows) where the last step's windows had their edges, inside the output."""
    h, w = size_hw
    cols = sorted({v % w for _, x in last_windows for v in (x, x + window)} - {0})
    rows = sorted({v % h for y, _ in last_windows for v in (y, y + window)} - {0})
    return cols, rows


def kid_on_lines(real: np.ndarray, image: np.ndarray, cols: list[int], rows: list[int], n: int, extractor) -> dict:
    """KID against random real crops of 256-px crops centred on the given border lines and of
    crops centred inside windows (their centre >= 96 px from every line: with lines every ~256 px
    no 256-px crop avoids them all, so "inside" means centred in a window)."""
    from wsi_cosynth.metrics.fid import kid_from_features
    from wsi_cosynth.metrics.inception import extract_features

    rng = np.random.default_rng(0)
    h, w = image.shape[:2]
    half, size = 128, 256
    on, off = [], []
    lines = [("c", b) for b in cols if half <= b <= w - half] + [("r", b) for b in rows if half <= b <= h - half]
    if not lines:
        return {"n": 0}
    while len(on) < n:
        kind, b = lines[int(rng.integers(len(lines)))]
        along = int(rng.integers(0, (h if kind == "c" else w) - size + 1))
        on.append(image[along:along + size, b - half:b + half] if kind == "c" else image[b - half:b + half, along:along + size])
    tries = 0
    far = 96
    while len(off) < n and tries < 100000:
        tries += 1
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        if all(abs(x + half - b) >= far for b in cols) and all(abs(y + half - b) >= far for b in rows):
            off.append(image[y:y + size, x:x + size])
    if len(off) < n:
        return {"n": n, "inside": f"no 256-px crop is centred {far} px from every border line"}
    real_crops = [real[y:y + size, x:x + size] for y, x in zip(rng.integers(0, real.shape[0] - size + 1, n),
                                                                rng.integers(0, real.shape[1] - size + 1, n))]
    f_on, f_off, f_real = (extract_features(list(c), extractor).features for c in (on, off, real_crops))

    def kid(a, b):
        return kid_from_features(a, b, rng=np.random.default_rng(1), subset_size=max(2, n // 2), n_subsets=50).mean

    k_on, k_off = kid(f_on, f_real), kid(f_off, f_real)
    return {"n": n, "kid_border": round(k_on, 4), "kid_inside": round(k_off, 4), "ratio": round(k_on / k_off, 3)}


def kid_border_vs_inside(picture: str, panel: int, panel_width: int, borders: list[int], n: int) -> dict:
    """KID against the real region of crops on chunk borders and of crops inside chunks, from a
    picture this script saved (panels of ``panel_width`` px with 8-px gaps; panel 0 is the real one)."""
    from PIL import Image

    from wsi_cosynth.metrics.fid import kid_from_features
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor, extract_features

    row = np.asarray(Image.open(picture).convert("RGB"))
    real = row[:, :panel_width]
    fused = row[:, panel * (panel_width + 8):panel * (panel_width + 8) + panel_width]
    rng = np.random.default_rng(0)
    border, inside = border_and_inside_crops(fused, borders, n, rng)
    real_crops = np.stack([real[y:y + 256, x:x + 256] for y, x in rng.integers(0, real.shape[0] - 256, (n, 2))])
    extractor = InceptionFeatureExtractor()
    f_border, f_inside, f_real = (extract_features(list(c), extractor).features for c in (border, inside, real_crops))

    def kid(a: np.ndarray, b: np.ndarray) -> float:
        return kid_from_features(a, b, rng=np.random.default_rng(1), subset_size=max(2, n // 2), n_subsets=50).mean

    k_border, k_inside = kid(f_border, f_real), kid(f_inside, f_real)
    return {"n": n, "kid_border_vs_real": round(k_border, 4), "kid_inside_vs_real": round(k_inside, 4),
            "ratio": round(k_border / k_inside, 3), "kid_border_vs_inside": round(kid(f_border, f_inside), 4)}


def save_picture(path: str, panels: list[np.ndarray]) -> None:
    from PIL import Image

    h = min(p.shape[0] for p in panels)
    gap = np.full((h, 8, 3), 255, np.uint8)
    row = [panels[0][:h]]
    for p in panels[1:]:
        row += [gap, p[:h]]
    Image.fromarray(np.concatenate(row, axis=1)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", required=True)
    ap.add_argument("--annotations", default=None)
    ap.add_argument("--slide-mpp", type=float, default=None)
    ap.add_argument("--region", type=int, nargs=4, required=True, metavar=("X", "Y", "W", "H"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--spacing", default="trailing")
    ap.add_argument("--schemes", nargs="+", default=["wrap:0:cosine"],
                    help="scheme:overlap:weights[:chunk] to compare (chunk default: --chunk)")
    ap.add_argument("--chunk", type=int, default=None, help="chunk core side (default: the library's)")
    ap.add_argument("--margin", type=int, default=None, help="chunk margin (default: the library's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-tiles", action="store_true", help="skip the independent-tiles baseline")
    ap.add_argument("--picture", default=None, help="PNG: real region | independent tiles | fused (first scheme)")
    ap.add_argument("--memory", type=int, default=None, metavar="S",
                    help="also measure peak RSS at regions of side S and 2S px (chunks of --memory-chunk px)")
    ap.add_argument("--memory-chunk", type=int, default=512)
    ap.add_argument("--memory-steps", type=int, default=2, help="sampling steps of the memory runs (memory does not depend on them)")
    ap.add_argument("--memory-only", action="store_true", help="only the memory measurement")
    ap.add_argument("--kid", default=None, metavar="PICTURE",
                    help="only: border-vs-inside KID from a picture this script saved (see --kid-panel)")
    ap.add_argument("--kid-panel", type=int, default=3, help="which panel of --kid holds the chunked fused image")
    ap.add_argument("--kid-borders", type=int, nargs="+", default=[512], help="chunk border lines (px)")
    ap.add_argument("--kid-n", type=int, default=48, help="crops per set")
    ap.add_argument("--border-kid", action="store_true",
                    help="KID of crops on the last step's window borders vs crops inside windows, for each scheme "
                         "(and on tile borders for the stitched tiles)")
    args = ap.parse_args()
    if args.kid:
        print(json.dumps(kid_border_vs_inside(args.kid, args.kid_panel, args.region[2], args.kid_borders, args.kid_n)))
        return
    if args.memory_only:
        print(json.dumps({"peak_rss_mib": {f"{s}px": round(peak_memory(args, s)) for s in (args.memory, 2 * args.memory)},
                          "chunk": args.memory_chunk}))
        return

    import torch

    import wsi_cosynth as wc
    from wsi_cosynth.pipeline.region_plan import plan_region
    from wsi_cosynth.slide import SlideReader

    torch.set_num_threads(args.threads)
    report: dict = {"region": args.region, "steps": args.steps, "sampler": args.sampler, "spacing": args.spacing}
    with SlideReader(args.slide, slide_mpp=args.slide_mpp) as reader:
        x, y, w, h = args.region
        real = reader.read_region((x, y), (w, h), reader.mpp)
    report["real"] = seam_report(real, 256)
    model = wc.load_model()
    plan = plan_region(args.slide, taxonomy=model.taxonomy, model_mpp=model.mpp, window=model.tile_size,
                       cell=model.config.model.unshuffle, annotations=args.annotations, region=tuple(args.region),
                       slide_mpp=args.slide_mpp)
    report["points"] = len(plan.classes)
    panels = [real]
    # Warm-up: the first network call of a process builds oneDNN's kernels (seconds on this CPU);
    # without it whichever run came first paid for them.
    wc.synthesize(independent_layouts(model, plan)[:1], model, steps=1, sampler=args.sampler, spacing=args.spacing)
    if not args.no_tiles:
        mosaic, cost = independent_tiles(args, model, plan)
        report["independent_tiles"] = {**cost, "seams": seam_report(mosaic, model.tile_size)}
        panels.append(mosaic)
    extractor = None
    if args.border_kid:
        from wsi_cosynth.metrics.inception import InceptionFeatureExtractor

        extractor = InceptionFeatureExtractor()
        if len(panels) > 1:  # the stitched tiles, on their tile borders: how big a visible seam scores
            grid = list(range(model.tile_size, max(real.shape[:2]), model.tile_size))
            report["independent_tiles"]["border_kid"] = kid_on_lines(real, panels[1], grid, grid, args.kid_n, extractor)
    for spec in args.schemes:
        scheme, overlap, weights, *chunk = spec.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            run = fused_run(args, scheme, int(overlap), weights, Path(tmp), int(chunk[0]) if chunk else args.chunk)
            image = read_level0(run["result"].slide)
        res = run.pop("result")
        report[f"fused {spec}"] = {**{k: round(v, 2) for k, v in run.items()}, "nuclei": res.n_nuclei,
                                    "chunks": res.n_chunks, "seams": seam_report(image, model.tile_size)}
        panels.append(image)
        if extractor is not None:  # crops on the last step's window borders (plus chunk borders) vs inside
            cols, rows = window_border_lines(res.last_windows, model.tile_size, image.shape[:2])
            report[f"fused {spec}"]["border_kid"] = kid_on_lines(real, image, cols, rows, args.kid_n, extractor)
        if "independent_tiles" in report:
            tiles = report["independent_tiles"]
            report[f"fused {spec}"]["cost_vs_tiles"] = round(run["s_per_mpx"] / tiles["s_per_mpx"], 2)
            report[f"fused {spec}"]["windows_vs_tiles"] = round(run["windows_per_mpx"] / tiles["windows_per_mpx"], 2)
    if args.picture:
        save_picture(args.picture, panels)
    if args.memory:
        report["peak_rss_mib"] = {f"{s}px": round(peak_memory(args, s)) for s in (args.memory, 2 * args.memory)}
    report["rss_self_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
