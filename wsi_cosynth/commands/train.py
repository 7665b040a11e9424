"""``wsi-cosynth train``: train the joint diffusion model on a labelled tile dataset."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the co-synthesis model on a labelled dataset",
        description="Train the joint image/label/distance diffusion model. Checkpoints (EMA weights, "
                    "safetensors + JSON) go to OUT/checkpoints every train.checkpoint_every steps and "
                    "OUT/model holds the latest; --resume continues from the latest checkpoint.",
    )
    p.add_argument("--config", required=True, help="YAML config file or preset name (tiny, cpu-small, paper-256)")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--format", default="consep", help="dataset format (a reader format, e.g. consep, pannuke, lizard, coco)")
    p.add_argument("--tissue", default=None, help="tissue type for the prompts (default: from the tiles, else 'unknown')")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=int, default=None, help="total training steps (overrides the config)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (overrides the config)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--holdout-images", default="", help="comma-separated source images kept out for validation (e.g. train_1,train_2)")
    p.add_argument("--taxonomy", default=None, help="map the data's classes by name into this built-in taxonomy")
    p.add_argument("--class-map", default=None, help="YAML {source_name: target_name} overrides for --taxonomy")
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel of the data (when the reader does not know it)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (overrides train.num_threads)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..errors import CosynthError, require_dir
    from ..exporters import read_dataset
    from ..models.config import load_config
    from ..taxonomy import get_taxonomy, load_class_map
    from ..training.dataset import TileDataset, source_image_of
    from ..training.loop import train

    config = load_config(args.config).with_overrides(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                                     num_threads=args.threads)
    data = require_dir(args.data, "--data directory")
    target = get_taxonomy(args.taxonomy) if args.taxonomy else None
    class_map = load_class_map(args.class_map) if args.class_map else None
    holdout = {h.strip() for h in args.holdout_images.split(",") if h.strip()}
    tiles, held, mpps = [], set(), set()
    for tile in read_dataset(data, args.format, taxonomy=target, class_map=class_map):
        src = source_image_of(tile.provenance.name)
        if src in holdout:
            held.add(src)
            continue
        tiles.append(tile)
        mpps.add(tile.provenance.mpp)
    if holdout - held:
        raise CosynthError(f"--holdout-images: no tiles from {sorted(holdout - held)} in {data}")
    if not tiles:
        raise CosynthError(f"no training tiles read from {data} (format {args.format})")
    mpp = args.mpp
    if mpp is None:
        known = {m for m in mpps if m is not None}
        if len(known) != 1:
            raise CosynthError(f"the tiles in {data} do not state one resolution ({sorted(known) or 'none'}); pass --mpp")
        mpp = known.pop()
    taxonomy = tiles[0].taxonomy
    dataset = TileDataset(tiles, taxonomy=taxonomy, tile_size=config.train.tile_size, tissue=args.tissue,
                          text_drop_prob=config.train.text_drop_prob)
    summary = {"path": str(Path(data).resolve()), "format": args.format, "tissue": args.tissue,
               "holdout_images": sorted(held), "mpp": mpp}
    print(f"training {config.name} on {len(dataset)} tiles from {data} ({taxonomy.key}: {', '.join(taxonomy.names)}), "
          f"{len(held)} source images held out; output {args.out}", flush=True)
    model = train(config, dataset, args.out, mpp=mpp, resume=args.resume, device=args.device,
                  data_summary=summary, progress=not args.no_progress)
    print(json.dumps({"out": str(Path(args.out) / "model"), "steps": config.train.steps,
                      "text_encoder": model.text_encoder_id}), flush=True)
    return 0
