"""Samples per second of a model at 1000/100/50/25 guided steps (cpu-small by default, untrained
weights: speed does not depend on them). The 1000-step figure is extrapolated from the measured
seconds per step of a shorter run unless --full is given (it says so in the output).
Prints one JSON line last.

``--bundled`` instead times the bundled default model end to end as a user calls it,
``wsi_cosynth.synthesize`` (point-guided watershed included) of ``--batch`` layouts at batch 4,
after a warm-up: the s/tile the model card states. ``--model DIR`` times that checkpoint the same
way; ``--settings`` lists the sampling settings to time (as ``default_model_quality.py`` takes
them; default: the model's own), run interleaved ``--repeats`` times so that a change of load
hits them alike.

    python benchmarks/sampling_speed.py [--config cpu-small] [--batch 8] [--threads 2] [--device cpu] [--bundled]
        [--model DIR] [--settings steps=25,sampler=ddpm,spacing=linspace own] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from wsi_cosynth.models.config import load_config
from wsi_cosynth.models.cosynth import CosynthModel
from wsi_cosynth.records import Layout, Provenance
from wsi_cosynth.taxonomy import get_taxonomy


def layouts(n: int, size: int, seed: int = 0) -> list[Layout]:
    rng = np.random.default_rng(seed)
    tax = get_taxonomy("consep")
    return [Layout(rng.uniform(0, size, (60, 2)), rng.integers(1, 5, 60), (size, size), tax,
                   Provenance(name=f"bench{i}", tissue="colon")) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cpu-small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100])
    ap.add_argument("--full", action="store_true", help="also run 1000 steps instead of extrapolating")
    ap.add_argument("--bundled", action="store_true", help="the bundled model through wsi_cosynth.synthesize")
    ap.add_argument("--model", default=None, help="with --bundled: this checkpoint instead of the bundled one")
    ap.add_argument("--settings", nargs="+", default=["own"],
                    help="with --bundled: sampling settings to time ('own' = the model's; see sampling_settings.py)")
    ap.add_argument("--repeats", type=int, default=1, help="with --bundled: interleaved repeats of the settings")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.bundled:
        return bundled(args)
    model = CosynthModel(load_config(args.config), get_taxonomy("consep"), mpp=0.25).to(args.device).eval()
    lays = layouts(args.batch, model.tile_size)
    model.sample(lays[:1], steps=2, generator=torch.Generator(args.device).manual_seed(0), device=args.device)  # warm-up
    results = {}
    per_step = []
    for n in args.steps + ([1000] if args.full else []):
        t0 = time.perf_counter()
        model.sample(lays, steps=n, guidance=2.0, generator=torch.Generator(args.device).manual_seed(0), device=args.device)
        dt = time.perf_counter() - t0
        results[str(n)] = {"samples_per_s": args.batch / dt, "s_per_tile": dt / args.batch, "measured": True}
        per_step.append(dt / n)
        print(f"{n} steps: {dt:.1f} s for {args.batch} tiles, {args.batch / dt:.4f} samples/s", flush=True)
    if not args.full:
        s_step = float(np.median(per_step))
        results["1000"] = {"samples_per_s": args.batch / (1000 * s_step), "s_per_tile": 1000 * s_step / args.batch,
                           "measured": False, "extrapolated_from_s_per_step": s_step}
        print(f"1000 steps (extrapolated): {args.batch / (1000 * s_step):.5f} samples/s", flush=True)
    print(json.dumps({"benchmark": "sampling_speed", "config": args.config, "batch": args.batch, "threads": args.threads,
                      "device": args.device, "guidance": 2.0, "sampler": "ddim", "results": results}))


def bundled(args) -> None:
    import os
    import sys

    import wsi_cosynth as wc

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from sampling_settings import network_passes, parse_setting

    model = wc.load_model(args.model, device=args.device)
    own = model.config.sample
    settings = {text: parse_setting(text, own) for text in args.settings}
    lays = layouts(args.batch, model.tile_size)
    wc.synthesize(lays[:1], model, steps=2, seed=0, device=args.device)  # warm-up
    seconds: dict[str, list[float]] = {text: [] for text in settings}
    for _ in range(args.repeats):
        for text, used in settings.items():
            t0 = time.perf_counter()
            wc.synthesize(lays, model, steps=used.steps, guidance=used.guidance, sampler=used.sampler, eta=used.eta,
                          guidance_interval=used.guidance_interval, spacing=used.spacing, final_label=used.final_label,
                          seed=0, batch_size=4,
                          device=args.device)
            seconds[text].append((time.perf_counter() - t0) / args.batch)
            print(f"{text}: {seconds[text][-1]:.3f} s per tile ({args.batch} tiles, batch 4, watershed included)", flush=True)
    results = {text: {"s_per_tile": [round(v, 3) for v in seconds[text]],
                      "network_passes": network_passes(used, model.process.num_steps), **used.model_dump()}
               for text, used in settings.items()}
    print(json.dumps({"benchmark": "sampling_speed", "model": args.model or "bundled", "tiles": args.batch,
                      "threads": args.threads, "device": args.device, "load_avg": os.getloadavg(), "results": results},
                     default=list))


if __name__ == "__main__":
    main()
