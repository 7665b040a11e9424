"""``wsi-cosynth train``: train the joint diffusion model on labelled tile datasets and annotated slides.

Several sources train one model: repeat ``--data DIR`` groups, each followed by its own
``--format``, ``--tissue``, ``--tissue-table``, ``--class-map`` and ``--slide-mpp`` (the same
options before the first ``--data`` apply to every source and to the ``--slide`` slides), or
give them all in a sources YAML (``--sources FILE``, see training/sources_file.py). Each source's
classes are mapped by name into the model's, and the sources are balanced by
``train.source_balance`` (``--balance``; training/mixture.py).
"""

from __future__ import annotations

import argparse

from ._output import add_output_arguments, show_progress

# Options that belong to the source opened by the --data before them (or, before any --data, to all).
PER_SOURCE = ("format", "tissue", "tissue_table", "class_map", "slide_mpp")
EVENTS = "_source_events"


class _InOrder(argparse.Action):
    """Records (option, value) in command-line order, so each --data can take the options after it."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001 - argparse's signature
        events = list(getattr(namespace, EVENTS, None) or [])
        events.append((self.dest, values))
        setattr(namespace, EVENTS, events)
        if self.dest == "data":
            setattr(namespace, "data", values)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the co-synthesis model on labelled datasets and/or annotated slides",
        description="Train the joint image/label/distance diffusion model on tile datasets (--data, repeatable, "
                    "each with its own --format/--tissue/--tissue-table/--class-map/--slide-mpp after it), on the "
                    "annotated tissue tiles of whole slides (--slide, repeatable), or on the sources of a YAML file "
                    "(--sources). Each source's classes are mapped by name into the model's; sources are balanced "
                    "by --balance. Checkpoints (EMA weights, safetensors + JSON) go to OUT/checkpoints every "
                    "train.checkpoint_every steps and OUT/model holds the latest; --resume continues from the "
                    "latest checkpoint.",
    )
    p.add_argument("--config", required=True, help="YAML config file or preset name (tiny, cpu-small, paper-256)")
    p.add_argument("--data", action=_InOrder, default=None,
                   help="a dataset directory (repeat for several sources; options after it apply to it)")
    p.add_argument("--slide", action="append", help="an annotated whole-slide image (repeat for several)")
    p.add_argument("--sources", default=None, help="a sources YAML: several datasets/slides with their options")
    p.add_argument("--format", action=_InOrder, default=argparse.SUPPRESS,
                   help="dataset format of the --data before it (a reader format, e.g. consep, pannuke, lizard, coco; "
                        "'slides': a directory of images with sidecar annotations, e.g. MoNuSeg's x.tif + x.xml); "
                        "default consep")
    p.add_argument("--annotations", action="append", default=None,
                   help="nuclei outlines of each --slide, in the same order (default: the slide's sidecar x.geojson)")
    p.add_argument("--min-nuclei", type=int, default=1,
                   help="with slides: skip tiles with fewer annotated nuclei (unannotated tissue is not nucleus-free)")
    p.add_argument("--tissue", action=_InOrder, default=argparse.SUPPRESS,
                   help="tissue type for the prompts of the --data before it (default: from the tiles, else 'unknown')")
    p.add_argument("--tissue-table", action=_InOrder, default=argparse.SUPPRESS,
                   help="CSV with columns image and organ (or tissue): the tissue of each source image, e.g. "
                        "MoNuSeg's organs.csv")
    p.add_argument("--slide-mpp", type=float, action=_InOrder, default=argparse.SUPPRESS,
                   help="resolution (um/px) of images whose files record none (format slides, --slide)")
    p.add_argument("--balance", choices=("sqrt", "equal", "tiles"), default=None,
                   help="how sources share the batches: sqrt(tiles), equal, or by tiles (default: the config's "
                        "train.source_balance, sqrt)")
    p.add_argument("--default-class", default=None, metavar="NAME",
                   help="class of nuclei annotated without one, for a model without an unknown class")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=int, default=None, help="total training steps (overrides the config)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (overrides the config)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint's weights (fine-tuning, e.g. the bundled model on your data); "
                        "the config must build the same network (or, for a latent config, be a pixel-space model "
                        "of the same sizes: its image stem and head are mapped onto the latent; or add the unknown "
                        "class: its point channel and prompt word start as the mean of the classes')")
    p.add_argument("--autoencoder-from", default=None,
                   help="latent configs: reuse this trained autoencoder (a run's autoencoder/ directory or a latent "
                        "model) instead of training one first")
    p.add_argument("--holdout-images", default="",
                   help="comma-separated source images kept out for validation (e.g. train_1,train_2; "
                        "slide file stems with --slide)")
    p.add_argument("--taxonomy", default=None, help="map the data's classes by name into this built-in taxonomy")
    p.add_argument("--class-map", action=_InOrder, default=argparse.SUPPRESS,
                   help="YAML {source_name: target_name} overrides for the --data before it (or all sources)")
    p.add_argument("--mpp", type=float, default=None,
                   help="microns per pixel of the model: of the data when the reader does not know it; slides are "
                        "tiled at it (default: the first dataset's, else 0.5)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (overrides train.num_threads)")
    add_output_arguments(p)
    p.set_defaults(run=run)


def source_specs(args: argparse.Namespace):
    """The sources the command line names: one per --data (with the options after it), and one
    for all --slide slides; options before the first --data apply to every source."""
    from pathlib import Path

    from ..errors import CosynthError
    from ..taxonomy import load_class_map
    from ..training.mixture import SourceSpec
    from ..training.sources_file import default_source_name

    shared: dict = {}
    groups: list[dict] = []
    for dest, value in getattr(args, EVENTS, None) or []:
        if dest == "data":
            groups.append({"data": value})
        else:
            (groups[-1] if groups else shared)[dest] = value

    def spec(options: dict, **where) -> SourceSpec:
        o = {**shared, **options}
        cm = o.get("class_map")
        return SourceSpec(
            **where, format=str(o.get("format", "consep")).lower(), tissue=o.get("tissue"),
            tissue_table=Path(o["tissue_table"]) if o.get("tissue_table") else None,
            class_map=load_class_map(cm) if cm else None, mpp=args.mpp, slide_mpp=o.get("slide_mpp"),
            min_nuclei=args.min_nuclei)

    specs = []
    for g in groups:
        data = Path(g.pop("data"))
        specs.append(spec(g, name=default_source_name(data, ()), data=data))
    if args.slide:
        slides = tuple(Path(s) for s in args.slide)
        specs.append(spec({"format": "slides"}, name="slides", slides=slides,
                          annotations=tuple(Path(a) for a in args.annotations or ())))
    names = [s.name for s in specs]
    taken: dict[str, int] = {}
    for i, n in enumerate(names):  # two sources of one name (two train/ directories): number them
        if names.count(n) > 1:
            taken[n] = taken.get(n, 0) + 1
            specs[i] = type(specs[i])(**{**specs[i].__dict__, "name": f"{n}-{taken[n]}"})
    if args.annotations and not args.slide:
        raise CosynthError("--annotations goes with --slide (each slide's outlines, in order)")
    return specs


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..errors import CosynthError
    from ..models.config import load_config
    from ..taxonomy import get_taxonomy
    from ..training.dataset import TileDataset
    from ..training.loop import train
    from ..training.mixture import load_sources
    from ..training.validation import validation_set

    given = [flag for flag, on in (("--data", args.data is not None), ("--slide", bool(args.slide)),
                                   ("--sources", args.sources is not None)) if on]
    if not given:
        raise CosynthError("give the training data: --data DIR (repeatable), --slide FILE (repeatable) or --sources FILE")
    if "--sources" in given and len(given) > 1:
        raise CosynthError(f"--sources lists every source itself; it does not combine with {' or '.join(given[:-1])}")
    config = load_config(args.config).with_overrides(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                                     num_threads=args.threads)
    holdout = [h.strip() for h in args.holdout_images.split(",") if h.strip()]
    balance = args.balance
    if args.sources:
        from ..training.sources_file import read_sources_file

        listed = read_sources_file(args.sources)
        specs, balance = list(listed.sources), balance or listed.balance
        holdout += [h for h in listed.holdout_images if h not in holdout]
    else:
        specs = source_specs(args)
    mixed = load_sources(specs, tile_size=config.train.tile_size, balance=balance or config.train.source_balance,
                         unknown_class=config.model.unknown_class,
                         taxonomy=get_taxonomy(args.taxonomy) if args.taxonomy else None, mpp=args.mpp,
                         holdout=holdout, default_class=args.default_class)
    taxonomy = mixed.taxonomy
    dataset = TileDataset(mixed.tiles, taxonomy=taxonomy, tile_size=config.train.crop_size or config.train.tile_size,
                          tissue=None, text_drop_prob=config.train.text_drop_prob, class_luts=mixed.class_luts,
                          weights=mixed.weights)
    # Held-out tiles score the EMA model at every checkpoint (validation.jsonl), on seeded crops and flips.
    validation = validation_set(mixed.validation, taxonomy=taxonomy, tile_size=config.train.tile_size,
                                tissue=None, class_luts=mixed.class_luts) if mixed.validation else None
    where = ", ".join(f"{d['name']} ({d['tiles']} tiles, p={d['probability']:g})" for d in mixed.summary["sources"])
    print(f"training {config.name} on {len(dataset)} tiles from {where} ({taxonomy.key}: {', '.join(taxonomy.names)}"
          f"{' + unknown class' if config.model.unknown_class else ''}), {len(mixed.held_out)} source images "
          f"({len(mixed.validation)} tiles) held out for validation; output {args.out}", flush=True)
    tissue = specs[0].tissue if len(specs) == 1 else None
    model = train(config, dataset, args.out, mpp=mixed.mpp, resume=args.resume, device=args.device,
                  data_summary={**mixed.summary, "tissue": tissue}, progress=show_progress(args),
                  validation=validation, init_from=args.init_from,
                  autoencoder_from=args.autoencoder_from)
    print(json.dumps({"out": str(Path(args.out) / "model"), "steps": config.train.steps,
                      "text_encoder": model.text_encoder_id}), flush=True)
    return 0
