"""Held-out validation loss of a series of checkpoints (e.g. the snapshots of one training run).

Scores each checkpoint with :func:`wsi_cosynth.training.validation.validation_losses` on the tiles
of the source images the checkpoint's metadata names as held out (the same fixed examples for
every checkpoint, so the numbers compare across steps). Prints a table, then one JSON line.

    .venv/bin/python benchmarks/validation_curve.py CKPT [CKPT ...] [--data ../shared/data/consep/train]
        [--format consep] [--examples 64]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

DATA = Path(os.environ.get("WSI_COSYNTH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", default=str(DATA / "consep" / "train"))
    parser.add_argument("--format", default="consep")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from wsi_cosynth.training.checkpoint import load_model, read_metadata
    from wsi_cosynth.training.sources import tiles_from_dataset
    from wsi_cosynth.training.validation import validation_losses, validation_set

    torch.set_num_threads(args.threads)
    metas = [read_metadata(c) for c in args.checkpoints]
    held = metas[0]["data"].get("holdout_images") or []
    if not held:
        raise SystemExit(f"{args.checkpoints[0]}: no held-out images recorded")
    model = load_model(args.checkpoints[0])
    source = tiles_from_dataset(args.data, args.format, taxonomy=model.taxonomy, holdout=held,
                                mpp=metas[0].get("mpp"))
    tissue = metas[0]["data"].get("tissue")
    validation = validation_set(source.validation, taxonomy=model.taxonomy, tile_size=model.tile_size, tissue=tissue)
    rows = []
    print(f"{'steps':>7s} {'image':>8s} {'distance':>9s} {'label':>8s} {'total':>8s}   ({len(source.validation)} "
          f"held-out tiles of {', '.join(held)}, {args.examples} examples)")
    for path, meta in sorted(zip(args.checkpoints, metas), key=lambda pm: pm[1]["steps"]):
        scores = validation_losses(load_model(path), validation, n_examples=args.examples)
        rows.append({"checkpoint": path, "steps": meta["steps"], **{k: round(v, 4) for k, v in scores.items()}})
        print(f"{meta['steps']:7d} {scores['image']:8.4f} {scores['distance']:9.4f} {scores['label']:8.4f} "
              f"{scores['total']:8.4f}", flush=True)
    print(json.dumps({"held_out_images": held, "examples": args.examples, "rows": rows}))


if __name__ == "__main__":
    main()
