"""Does our synthetic data help a nuclei segmenter? Three arms, one reference segmenter.

    .venv/bin/python benchmarks/downstream.py [--model DIR] [--train DIR --test DIR --format F]
        [--steps 1200] [--seeds 1] [--ratio 1] [--resampled-share 0.5] [--synthetic-per-layout 1]

The arms (real only, real + synthetic, synthetic only) train the same small U-Net
(wsi_cosynth/detection/segmenter.py) for the same optimizer steps with the same seeds and
augmentation; only their training tiles differ. Synthetic tiles are co-synthesised by the model
(default: the bundled one) from the real training tiles' layouts and from resampled layouts, at
the model's default sampling settings unless --sample-steps / --guidance say otherwise, and are
cached per model and plan (--cache), 32 layouts per chunk as each is made, so a rerun only
retrains the segmenters and a run stopped during synthesis resumes at its first missing chunk.

Without --test, the test set is the tiles of the source images the model was trained without
(its model.json ``holdout_images``, e.g. CoNSeP train_3/13/23), and the training set is every
other tile of --train; with --test, the two directories are used as they are. Scores on the
test tiles: Dice, AJI, PQ (DQ, SQ) as means over tiles, detection F1 and per-class F1 of nuclei
paired within 12 px (HoVer-Net's compute_stats). Prints a table, then one JSON line
{"real_only": {...}, "real_plus_synthetic": {...}, "synthetic_only": {...}}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

DATA = Path(os.environ.get("WSI_COSYNTH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _split(tiles, held_out):
    from wsi_cosynth.training.dataset import source_image_of

    held = set(held_out)
    train = [t for t in tiles if source_image_of(t.provenance.name) not in held]
    test = [t for t in tiles if source_image_of(t.provenance.name) in held]
    return train, test


def _synthetic(model, model_path: Path, real, plan, cache_root: Path, batch_size: int):
    """The plan's synthetic tiles, read from the cache when this model and plan made them before."""
    from wsi_cosynth.evaluation.downstream import synthesize_training_tiles

    key = hashlib.sha256()
    key.update((model_path / "model.safetensors").read_bytes())
    key.update(json.dumps({**plan.__dict__, "real": sorted(t.provenance.name for t in real),
                           "batch_size": batch_size, "seeding": "per chunk",
                           # the model's own sampling settings (e.g. its guidance interval) shape the tiles too
                           "sample": model.config.sample.model_dump(mode="json")}, sort_keys=True).encode())
    cache = cache_root / key.hexdigest()[:16]
    # Chunks are kept as they are made, so a run stopped during synthesis resumes there.
    start = time.perf_counter()
    tiles = synthesize_training_tiles(model, real, plan, batch_size=batch_size, chunk_dir=cache)
    return tiles, time.perf_counter() - start, cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the bundled model)")
    parser.add_argument("--train", default=str(DATA / "consep" / "train"), help="labelled training tiles")
    parser.add_argument("--test", default=None, help="labelled test tiles (default: --train's held-out source images)")
    parser.add_argument("--format", default="consep", help="format of --train and --test")
    parser.add_argument("--holdout", default=None, help="comma-separated test source images when --test is absent")
    parser.add_argument("--steps", type=int, default=1200, help="segmenter optimizer steps per arm")
    parser.add_argument("--seeds", type=int, default=1, help="segmenter seeds per arm (scores are means)")
    parser.add_argument("--ratio", type=float, default=1.0, help="synthetic tiles per real training tile")
    parser.add_argument("--resampled-share", type=float, default=0.5, help="share of synthetic layouts resampled")
    parser.add_argument("--synthetic-per-layout", type=int, default=1, help="synthetic tiles per layout")
    parser.add_argument("--sample-steps", type=int, default=None, help="diffusion steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument("--sampler", choices=["ddim", "ddpm"], default=None, help="sampler (default: the model's)")
    parser.add_argument("--tissue", default=None, help="prompt tissue (default: the model's training tissue)")
    parser.add_argument("--segmenter-widths", default="16,32,64,128", help="segmenter channels per U-Net level")
    parser.add_argument("--arms", nargs="+", default=None, help="run only these arms")
    parser.add_argument("--synthesis-only", action="store_true",
                        help="fill the synthesis cache and stop (then run the arms as separate processes)")
    parser.add_argument("--cache", type=Path, default=Path("runs/downstream-cache"))
    parser.add_argument("--batch-size", type=int, default=4, help="synthesis batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    import wsi_cosynth as wc
    from wsi_cosynth.evaluation.downstream import ARMS, SyntheticPlan, build_arms, run_arm
    from wsi_cosynth.exporters import read_dataset
    from wsi_cosynth.detection.segmenter import SegmenterConfig
    from wsi_cosynth.pipeline.synthetic import default_model_path
    from wsi_cosynth.training.checkpoint import read_metadata

    torch.set_num_threads(args.threads)
    model_path = Path(args.model) if args.model else default_model_path()
    meta = read_metadata(model_path)
    model = wc.load_model(model_path)
    tiles = list(read_dataset(args.train, args.format, taxonomy=model.taxonomy))
    if args.test:
        train, test = tiles, list(read_dataset(args.test, args.format, taxonomy=model.taxonomy))
        held_out = []
    else:
        held_out = args.holdout.split(",") if args.holdout else list(meta.get("data", {}).get("holdout_images") or [])
        if not held_out:
            parser.error("the model names no held-out images: give --test or --holdout")
        train, test = _split(tiles, held_out)
    if not train or not test:
        parser.error(f"empty split: {len(train)} training and {len(test)} test tiles")
    tissue = args.tissue or meta.get("data", {}).get("tissue") or "unknown"
    # The plan names every sampling setting (the model's own unless given), so the cache key does.
    settings = model.config.sample.with_overrides(steps=args.sample_steps, guidance=args.guidance, sampler=args.sampler)
    plan = SyntheticPlan(ratio=args.ratio, resampled_share=args.resampled_share, per_layout=args.synthetic_per_layout,
                         steps=settings.steps, guidance=settings.guidance, sampler=settings.sampler,
                         seed=args.seed, tissue=tissue)
    arm_names = args.arms or list(ARMS)
    synthetic, synth_seconds, cache = [], 0.0, None
    if any(name != "real_only" for name in arm_names):  # the real-only arm alone does not wait for synthesis
        synthetic, synth_seconds, cache = _synthetic(model, model_path, train, plan, args.cache, args.batch_size)
    print(f"# {len(train)} real training tiles, {len(synthetic)} synthetic ({cache}; "
          f"{synth_seconds:.0f} s to synthesise), {len(test)} test tiles", flush=True)
    if args.synthesis_only:
        return
    config = SegmenterConfig(widths=tuple(int(w) for w in args.segmenter_widths.split(",")), steps=args.steps,
                             seed=args.seed, threads=args.threads)
    results, seconds = {}, {}
    for arm in build_arms(train, synthetic, config, arm_names):
        start = time.perf_counter()
        results[arm.name] = run_arm(arm, test, model.taxonomy, seeds=args.seeds)
        seconds[arm.name] = time.perf_counter() - start
        print(f"# {arm.name}: {json.dumps(results[arm.name])} ({seconds[arm.name]:.0f} s)", flush=True)
    names = list(model.taxonomy.names)
    print(f"{'arm':<22} {'tiles':>5} {'dice':>6} {'aji':>6} {'pq':>6} {'dq':>6} {'sq':>6} {'F1d':>6} "
          + " ".join(f"{n[:6]:>6}" for n in names) + f" {'s':>6}")
    for name in ARMS:
        if name in results:
            r = results[name]
            print(f"{name:<22} {r['n_train_tiles']:>5} {r['dice']:6.3f} {r['aji']:6.3f} {r['pq']:6.3f} {r['dq']:6.3f} "
                  f"{r['sq']:6.3f} {r['f1_detection']:6.3f} " + " ".join(f"{r['f1_classes'][n]:6.3f}" for n in names)
                  + f" {seconds[name]:6.0f}")
    print(json.dumps({**results, "_run": {"model": str(model_path), "held_out": held_out, "test_tiles": len(test),
                                          "plan": plan.__dict__, "segmenter": config.to_dict(),
                                          "synthesis_seconds": round(synth_seconds, 1)}}))


if __name__ == "__main__":
    main()
