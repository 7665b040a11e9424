"""``wsi-cosynth train``: train the joint diffusion model on a labelled tile dataset or annotated slides."""

from __future__ import annotations

import argparse

from ._output import add_output_arguments, show_progress


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the co-synthesis model on a labelled dataset or annotated slides",
        description="Train the joint image/label/distance diffusion model on a tile dataset (--data) or on "
                    "the annotated tissue tiles of whole slides (--slide, repeatable). Checkpoints (EMA "
                    "weights, safetensors + JSON) go to OUT/checkpoints every train.checkpoint_every steps and "
                    "OUT/model holds the latest; --resume continues from the latest checkpoint.",
    )
    p.add_argument("--config", required=True, help="YAML config file or preset name (tiny, cpu-small, paper-256)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset directory")
    source.add_argument("--slide", action="append", help="an annotated whole-slide image (repeat for several)")
    p.add_argument("--format", default="consep", help="dataset format (a reader format, e.g. consep, pannuke, lizard, coco)")
    p.add_argument("--annotations", action="append", default=None,
                   help="nuclei outlines of each --slide, in the same order (default: the slide's sidecar x.geojson)")
    p.add_argument("--min-nuclei", type=int, default=1,
                   help="with --slide: skip tiles with fewer annotated nuclei (unannotated tissue is not nucleus-free)")
    p.add_argument("--tissue", default=None, help="tissue type for the prompts (default: from the tiles, else 'unknown')")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=int, default=None, help="total training steps (overrides the config)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (overrides the config)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint's weights (fine-tuning, e.g. the bundled model on your data); "
                        "the config must build the same network (or, for a latent config, be a pixel-space model "
                        "of the same sizes: its image stem and head are mapped onto the latent)")
    p.add_argument("--autoencoder-from", default=None,
                   help="latent configs: reuse this trained autoencoder (a run's autoencoder/ directory or a latent "
                        "model) instead of training one first")
    p.add_argument("--holdout-images", default="",
                   help="comma-separated source images kept out for validation (e.g. train_1,train_2; "
                        "slide file stems with --slide)")
    p.add_argument("--taxonomy", default=None, help="map the data's classes by name into this built-in taxonomy")
    p.add_argument("--class-map", default=None, help="YAML {source_name: target_name} overrides for --taxonomy")
    p.add_argument("--mpp", type=float, default=None,
                   help="microns per pixel of the data when the reader does not know it; with --slide, the "
                        "resolution to tile at (default 0.5)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (overrides train.num_threads)")
    add_output_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..models.config import load_config
    from ..taxonomy import get_taxonomy, load_class_map
    from ..training.dataset import TileDataset
    from ..training.loop import train
    from ..training.sources import tiles_from_dataset, tiles_from_slides
    from ..training.validation import validation_set

    config = load_config(args.config).with_overrides(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                                     num_threads=args.threads)
    target = get_taxonomy(args.taxonomy) if args.taxonomy else None
    class_map = load_class_map(args.class_map) if args.class_map else None
    holdout = [h.strip() for h in args.holdout_images.split(",") if h.strip()]
    if args.slide:
        source = tiles_from_slides(args.slide, args.annotations, mpp=args.mpp or 0.5,
                                   tile_size=config.train.tile_size, taxonomy=target, class_map=class_map,
                                   holdout=holdout, tissue=args.tissue, min_nuclei=args.min_nuclei)
        where = f"{len(args.slide)} slide(s)"
    else:
        source = tiles_from_dataset(args.data, args.format, taxonomy=target, class_map=class_map, holdout=holdout,
                                    mpp=args.mpp)
        where = args.data
    taxonomy = source.taxonomy
    dataset = TileDataset(source.tiles, taxonomy=taxonomy, tile_size=config.train.crop_size or config.train.tile_size,
                          tissue=args.tissue,
                          text_drop_prob=config.train.text_drop_prob)
    # Held-out tiles score the EMA model at every checkpoint (validation.jsonl), on seeded crops and flips.
    validation = validation_set(source.validation, taxonomy=taxonomy, tile_size=config.train.tile_size,
                                tissue=args.tissue) if source.validation else None
    print(f"training {config.name} on {len(dataset)} tiles from {where} ({taxonomy.key}: {', '.join(taxonomy.names)}), "
          f"{len(source.held_out)} source images ({len(source.validation)} tiles) held out for validation; "
          f"output {args.out}", flush=True)
    model = train(config, dataset, args.out, mpp=source.mpp, resume=args.resume, device=args.device,
                  data_summary={**source.summary, "tissue": args.tissue}, progress=show_progress(args),
                  validation=validation, init_from=args.init_from,
                  autoencoder_from=args.autoencoder_from)
    print(json.dumps({"out": str(Path(args.out) / "model"), "steps": config.train.steps,
                      "text_encoder": model.text_encoder_id}), flush=True)
    return 0
