"""Parameters, FLOPs per network evaluation, ms per evaluation per tile (batch 8) and FLOPs per
tile for a guided sample at 1000/100/50/25 steps, for each config preset.

FLOPs come from torch.utils.flop_counter.FlopCounterMode (multiply-adds counted as 2 FLOPs).
A guided step is ONE forward at doubled batch, so it costs 2 evaluations per tile; the RRDB point
encoder runs once per sample. Prints one JSON line last.

    python benchmarks/model_cost.py [--configs tiny cpu-small paper-256] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from wsi_cosynth.diffusion.joint import JointState
from wsi_cosynth.models.config import load_config
from wsi_cosynth.models.cosynth import CosynthModel
from wsi_cosynth.taxonomy import get_taxonomy

AUTHORS_PFLOP_PER_TILE = 2.5  # ~2,000 passes x ~1.28 TFLOP (docs/METHOD.md)


def _inputs(model: CosynthModel, batch: int):
    s = model.tile_size
    gen = torch.Generator().manual_seed(0)
    x = JointState(torch.randn(batch, 3, s, s, generator=gen), torch.randn(batch, 1, s, s, generator=gen),
                   torch.randint(0, model.taxonomy.n_classes + 1, (batch, s, s), generator=gen))
    points = torch.zeros(batch, s, s, dtype=torch.long)
    points[:, ::16, ::16] = 1
    text = torch.randn(batch, model.text_encoder.dim)
    return x, points, text, torch.full((batch,), 500)


def measure(name: str, *, batch: int, repeats: int, time_it: bool) -> dict:
    model = CosynthModel(load_config(name), get_taxonomy("consep"), mpp=0.25).eval()
    x1, p1, txt1, t1 = _inputs(model, 1)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            feats = model.denoiser.encode_points(p1)
        rrdb = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            model.denoiser(x1, t1, txt1, feats)
        unet = fc.get_total_flops()
        ms = None
        if time_it:
            xb, pb, txtb, tb = _inputs(model, batch)
            fb = model.denoiser.encode_points(pb)
            model.denoiser(xb, tb, txtb, fb)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.denoiser(xb, tb, txtb, fb)
                times.append(time.perf_counter() - t0)
            ms = 1000 * min(times) / batch
    per_tile = {str(n): rrdb + 2 * n * unet for n in (1000, 100, 50, 25)}
    return {
        "config": name,
        "params": sum(p.numel() for p in model.parameters()),
        "tile_size": model.tile_size,
        "gflop_per_eval": unet / 1e9,
        "gflop_rrdb_once": rrdb / 1e9,
        "ms_per_eval_per_tile_batch8": ms,
        "tflop_per_tile_guided": {k: v / 1e12 for k, v in per_tile.items()},
        "fraction_of_authors_at_25": per_tile["25"] / (AUTHORS_PFLOP_PER_TILE * 1e15),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["tiny", "cpu-small", "paper-256"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-time", nargs="*", default=[], help="configs to count but not time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.configs:
        row = measure(name, batch=args.batch, repeats=args.repeats, time_it=name not in args.no_time)
        rows.append(row)
        print(f"{name}: {row['params'] / 1e6:.2f} M params, {row['gflop_per_eval']:.2f} GFLOP/eval, "
              f"{row['ms_per_eval_per_tile_batch8']} ms/eval/tile, 25 guided steps = "
              f"{row['tflop_per_tile_guided']['25']:.3f} TFLOP/tile", flush=True)
    print(json.dumps({"benchmark": "model_cost", "threads": args.threads, "device": "cpu", "results": rows}))


if __name__ == "__main__":
    main()
