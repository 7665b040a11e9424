"""Quality of a model's samples against held-out real tiles, over step counts and guidance scales.

Takes the layouts of the held-out CoNSeP source images (those the default model did not train
on), co-synthesises one tile per layout for each (steps, guidance) setting, and compares the
synthetic set with the real tiles of the same images: FID, KID, FSD (percent scale, as the paper),
label-image agreement, and how well the samples' labels follow the layouts (share of layout points
that land on a synthetic nucleus of their class). Prints a table, then one JSON line.

    .venv/bin/python benchmarks/default_model_quality.py [--model DIR] [--tiles 16]
        [--settings 25:2 50:2 100:2 25:1 25:3 25:2:0.2-0.8 sampler=dpmpp_2m,steps=8,spacing=trailing]
        [--samples samples.jpg] [--samples-dir DIR] [--sampler NAME] [--eta 0]

A setting is steps:guidance, optionally :lo-hi, the guidance interval (t / (T - 1)) to use
instead of the model's own; or comma-separated KEY=VALUE pairs over the model's sampling settings
(steps, guidance, sampler, eta, spacing, interval=lo-hi); what a setting leaves out is the model's
own (or --sampler / --eta). Each row counts the network passes per tile (a guided step is two).

``--samples`` writes a figure of the first setting's first four tiles, one row each: the real
held-out tile with its nuclei outlined, the synthetic image from the same layout, the same with
its separated nuclei outlined, and the synthetic label. ``--samples-dir`` writes one such figure
per setting.

IS is reported as null with the default FID weights, which carry no classification head.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("WSI_COSYNTH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def point_label_agreement(layouts, tiles) -> float:
    """Share of layout points whose pixel in the synthetic semantic label has the point's class."""
    hits = total = 0
    for lay, tile in zip(layouts, tiles):
        sem = tile.extra["semantic"]
        for (x, y), c in zip(lay.xy_tile, lay.classes):
            hits += int(sem[int(y), int(x)] == c)
            total += 1
    return hits / max(total, 1)


def save_samples(path: Path, real, tiles, n: int = 4) -> None:
    """Rows of (real with outlines, synthetic image, synthetic with outlines, synthetic label)."""
    from PIL import Image

    from wsi_cosynth.render import label_image, outlines, tile_grid

    panels = []
    for r, t in list(zip(real, tiles))[:n]:
        panels += [outlines(r), t.image, outlines(t), label_image(t)]
    grid = tile_grid(panels, columns=4)
    options = {"quality": 85} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(grid).save(path, **options)


def _round(x, digits: int = 2):
    return None if x is None else round(float(x), digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--data", default=str(DATA / "consep" / "train"))
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--settings", nargs="+", default=["25:2", "50:2", "100:2", "25:1", "25:3"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", choices=["ddim", "ddpm", "dpmpp_2m", "dpmpp_2m_sde"], default=None,
                        help="default: the model's")
    parser.add_argument("--eta", type=float, default=None, help="DDIM stochasticity (0 deterministic, 1 DDPM-like; default: the model's)")
    parser.add_argument("--samples", type=Path, default=None, help="write a sample figure (PNG or JPEG)")
    parser.add_argument("--samples-dir", type=Path, default=None, help="write a sample figure per setting here")
    args = parser.parse_args()

    import wsi_cosynth as wc
    from sampling_settings import network_passes, parse_setting
    from wsi_cosynth.evaluation.runner import evaluate_sets, summarize_set
    from wsi_cosynth.exporters import read_dataset
    from wsi_cosynth.layouts import layout_from_tile
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor
    from wsi_cosynth.training.checkpoint import read_metadata
    from wsi_cosynth.pipeline.synthetic import default_model_path

    model_path = args.model or str(default_model_path())
    held_out = read_metadata(model_path).get("data", {}).get("holdout_images") or []
    model = wc.load_model(model_path)
    real = [t for t in read_dataset(args.data, "consep", taxonomy=model.taxonomy)
            if not held_out or any(t.provenance.name.startswith(f"{h}_") for h in held_out)]
    rng = np.random.default_rng(args.seed)
    real = [real[i] for i in sorted(rng.choice(len(real), size=min(args.tiles, len(real)), replace=False))]
    layouts = [layout_from_tile(t).with_tissue("colon") for t in real]
    extractor = InceptionFeatureExtractor()
    real_summary = summarize_set(real, extractor, name="real")
    rows = []
    for setting in args.settings:
        used = parse_setting(setting, model.config.sample, sampler=args.sampler, eta=args.eta)
        start = time.perf_counter()
        tiles = wc.synthesize(layouts, model, steps=used.steps, guidance=used.guidance, sampler=used.sampler,
                              eta=used.eta, guidance_interval=used.guidance_interval, spacing=used.spacing,
                              final_label=used.final_label, seed=args.seed)
        seconds = time.perf_counter() - start
        figures = evaluate_sets(real_summary, tiles, extractor=extractor, seed=args.seed)
        row = {"setting": setting, "steps": used.steps, "guidance": used.guidance, "sampler": used.sampler,
               "eta": used.eta, "spacing": used.spacing, "final_label": used.final_label, "guidance_interval": list(used.guidance_interval),
               "network_passes": network_passes(used, model.process.num_steps), "tiles": len(tiles),
               "seconds_per_tile": round(seconds / len(tiles), 2),
               "fid": _round(figures["image"]["fid"]), "kid": _round(figures["image"]["kid"]["mean"], 5),
               "is": figures["image"]["inception_score"]["synthetic"], "fsd": _round(figures["labels"]["fsd"]),
               "agreement_auc": _round(figures["agreement"]["synthetic"]["mean_auc"], 3),
               "real_agreement_auc": _round(figures["agreement"]["real"]["mean_auc"], 3),
               "points_on_their_class": round(point_label_agreement(layouts, tiles), 4)}
        rows.append(row)
        if args.samples is not None and len(rows) == 1:
            save_samples(args.samples, real, tiles)
        if args.samples_dir is not None:
            args.samples_dir.mkdir(parents=True, exist_ok=True)
            stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in setting)
            save_samples(args.samples_dir / f"{len(rows):02d}_{stem}.png", real, tiles)
        print(json.dumps(row), flush=True)
    print(json.dumps({"model": model_path, "held_out_images": held_out, "real_tiles": len(real), "rows": rows}))


if __name__ == "__main__":
    main()
