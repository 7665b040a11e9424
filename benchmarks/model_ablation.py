"""One model ablation run at a fixed CPU-time budget, scored like the default model.

    .venv/bin/python benchmarks/model_ablation.py --name v128 --set train.crop_size=128 \
        --set diffusion.prediction=v [--config cpu-small] [--init-from DIR] [--cpu-seconds 900]

Trains ``--config`` with the ``--set`` overrides (dotted keys into the config's sections, values
parsed as YAML) on CoNSeP train minus the held-out source images, until this process has used
``--cpu-seconds`` of CPU time (all threads: runs that share a machine get equal compute), then
scores the EMA weights with ``default_model_quality.py`` (held-out layouts, 25 guided steps: KID,
FID, FSD, label-image agreement, points on class, a sample grid). Runs resume: a second call with
the same --out continues from its last checkpoint for another budget. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("WSI_COSYNTH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
HERE = Path(__file__).resolve().parent


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """``section.key=value`` strings (value as YAML) applied to a config dict."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set wants section.key=value, got {item!r}")
        *path, last = key.split(".")
        node = config
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(raw)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--config", default="cpu-small")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--init-from", default=None, help="start from these weights (default: from scratch)")
    parser.add_argument("--autoencoder-from", default=None, help="latent configs: a trained autoencoder to reuse")
    parser.add_argument("--cpu-seconds", type=float, default=900.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=str(DATA / "consep" / "train"))
    parser.add_argument("--holdout", default="train_3,train_13,train_23")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/ablation/NAME)")
    parser.add_argument("--score-tiles", type=int, default=48)
    parser.add_argument("--no-score", action="store_true")
    args = parser.parse_args()

    import torch

    from wsi_cosynth.models.config import CosynthConfig, load_config
    from wsi_cosynth.training.dataset import TileDataset
    from wsi_cosynth.training.loop import latest_checkpoint, train
    from wsi_cosynth.training.sources import tiles_from_dataset
    from wsi_cosynth.training.validation import validation_set

    torch.set_num_threads(args.threads)
    out = args.out or Path("runs/ablation") / args.name
    base = load_config(args.config).to_dict()
    base["train"]["num_threads"] = args.threads
    config = CosynthConfig.from_dict(apply_overrides(base, args.overrides), where="--set")
    source = tiles_from_dataset(args.data, "consep", holdout=args.holdout.split(","), mpp=0.25)
    tc = config.train
    dataset = TileDataset(source.tiles, taxonomy=source.taxonomy, tile_size=tc.crop_size or tc.tile_size,
                          tissue="colon", text_drop_prob=tc.text_drop_prob)
    validation = validation_set(source.validation, taxonomy=source.taxonomy, tile_size=tc.tile_size, tissue="colon")
    resume = latest_checkpoint(out) is not None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    train(config, dataset, out, mpp=source.mpp, resume=resume, progress=False, validation=validation,
          data_summary={**source.summary, "tissue": "colon"}, cpu_seconds=args.cpu_seconds,
          init_from=None if resume else args.init_from,
          autoencoder_from=None if resume else args.autoencoder_from)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    meta = json.loads((out / "model" / "model.json").read_text())
    row = {"name": args.name, "config": args.config, "overrides": args.overrides, "init_from": args.init_from, "steps": meta["steps"],
           "cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1),
           "validation": meta["data"].get("validation")}
    if not args.no_score:
        proc = subprocess.run(
            [sys.executable, str(HERE / "default_model_quality.py"), "--model", str(out / "model"),
             "--data", args.data, "--tiles", str(args.score_tiles), "--settings", "25:2",
             "--samples", str(out / "samples.png")], capture_output=True, text=True, check=True)
        row["quality"] = json.loads(proc.stdout.strip().splitlines()[-1])["rows"][0]
    with (Path("runs/ablation") / "results.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
