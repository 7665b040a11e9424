"""Train a latent model's image autoencoder (stage one) and score its reconstructions.

The reconstructions of the held-out tiles bound what any latent model with this autoencoder can
reach: KID/FID of the decoded held-out tiles against the tiles themselves (the same 48 tiles and
seed as ``default_model_quality.py``; compare with the degraded rows of ``kid_diagnostics.py``),
PSNR, and a figure of originals over reconstructions.

    .venv/bin/python benchmarks/autoencoder_quality.py --out runs/autoencoder/f4c4 \
        [--set latent_channels=4] [--steps 3000] [--cpu-seconds 1500] [--threads 2]

Resumes from ``--out``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("WSI_COSYNTH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="autoencoder config key=value")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cpu-seconds", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default=str(DATA / "consep" / "train"))
    parser.add_argument("--holdout", default="train_3,train_13,train_23")
    parser.add_argument("--tiles", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-train", action="store_true", help="score the saved autoencoder only")
    args = parser.parse_args()

    import torch
    import yaml

    from wsi_cosynth.exporters import read_dataset
    from wsi_cosynth.metrics.fid import fid_from_features, kid_from_features
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor, extract_features
    from wsi_cosynth.models.autoencoder import ImageAutoencoder
    from wsi_cosynth.models.config import AutoencoderConfig
    from wsi_cosynth.render import tile_grid
    from wsi_cosynth.training.autoencoder import STATE, train_autoencoder
    from wsi_cosynth.training.dataset import TileDataset
    from wsi_cosynth.training.sources import tiles_from_dataset

    torch.set_num_threads(args.threads)
    config = AutoencoderConfig(**{k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)})
    ae = ImageAutoencoder(config)
    holdout = args.holdout.split(",")
    source = tiles_from_dataset(args.data, "consep", holdout=holdout, mpp=0.25)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if args.no_train:
        ae.load_state_dict(torch.load(args.out / STATE, map_location="cpu", weights_only=False)["weights"])
        trained = json.loads((args.out / "autoencoder.json").read_text())
    else:
        dataset = TileDataset(source.tiles, taxonomy=source.taxonomy, tile_size=args.crop, tissue="colon")
        trained = train_autoencoder(ae, dataset, args.out, steps=args.steps, batch_size=args.batch, lr=args.lr,
                                    cpu_seconds=args.cpu_seconds, seed=args.seed)
    train_cpu, train_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ae.eval()

    # The held-out tiles, drawn as default_model_quality.py draws them.
    real = [t for t in read_dataset(args.data, "consep", taxonomy=source.taxonomy)
            if any(t.provenance.name.startswith(f"{h}_") for h in holdout)]
    rng = np.random.default_rng(args.seed)
    real = [real[i] for i in sorted(rng.choice(len(real), size=min(args.tiles, len(real)), replace=False))]
    originals = [t.image for t in real]
    recon = []
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(originals), 8):
            x = torch.from_numpy(np.stack(originals[i:i + 8]).astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1
            y = ae.decode(ae.encode(x)).clamp(-1, 1)
            recon += list(((y + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    seconds_per_tile = (time.perf_counter() - start) / len(originals)
    mse = np.mean([(a.astype(np.float64) - b) ** 2 for a, b in zip(originals, recon)])
    extractor = InceptionFeatureExtractor()
    ref = extract_features(originals, extractor).features
    feats = extract_features(recon, extractor).features
    kid = kid_from_features(ref, feats, rng=np.random.default_rng(args.seed))
    from PIL import Image

    panels = [im for pair in zip(originals[:6], recon[:6]) for im in pair]
    Image.fromarray(tile_grid(panels, columns=4)).save(args.out / "reconstructions.png")
    row = {"out": str(args.out), "config": config.model_dump(mode="json"), "step": trained["step"],
           "train_cpu_seconds": round(train_cpu, 1), "train_wall_seconds": round(train_wall, 1),
           "latent_scale": trained["latent_scale"], "tiles": len(originals),
           "kid": round(kid.mean, 5), "fid": round(fid_from_features(ref, feats), 1),
           "psnr": round(10 * np.log10(255.0 ** 2 / mse), 2), "encode_decode_s_per_tile": round(seconds_per_tile, 3),
           "parameters": sum(p.numel() for p in ae.parameters())}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
