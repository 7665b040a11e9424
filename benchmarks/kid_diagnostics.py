"""What the KID of a model's samples is made of: the same held-out real tiles against degraded
copies of themselves and against the model's samples with their colour statistics matched.

A model's KID mixes colour (stain) mismatch with missing texture. This script measures, at the
same n and against the same real tiles as ``default_model_quality.py`` (48 held-out tiles, seed 0):

- ``other_real``: real tiles of the training images (disjoint sources): the floor;
- ``blur_s1`` / ``blur_s2``: the real tiles blurred (Gaussian sigma 1 / 2 px): texture lost;
- ``half_res``: the real tiles at half resolution, scaled back up (detail finer than 2 px lost);
- ``grain``: the real tiles plus Gaussian noise (sigma 8 grey levels);
- ``synthetic``: the model's samples from the held-out layouts (the model's own sampling settings);
- ``synthetic_colour_matched``: those samples with each RGB channel's mean and standard deviation
  over the set moved to the real set's: what is left is not colour.

    .venv/bin/python benchmarks/kid_diagnostics.py [--model DIR] [--tiles 48]

Prints one row per set, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("WSI_COSYNTH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def colour_matched(images: list[np.ndarray], reference: list[np.ndarray]) -> list[np.ndarray]:
    """``images`` with each channel's set-wide mean and std moved to ``reference``'s."""
    src = np.stack(images).astype(np.float64)
    ref = np.stack(reference).astype(np.float64)
    mu_s, sd_s = src.mean(axis=(0, 1, 2)), src.std(axis=(0, 1, 2)) + 1e-6
    mu_r, sd_r = ref.mean(axis=(0, 1, 2)), ref.std(axis=(0, 1, 2))
    out = (src - mu_s) / sd_s * sd_r + mu_r
    return list(np.clip(np.round(out), 0, 255).astype(np.uint8))


def degraded(images: list[np.ndarray], kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    from PIL import Image, ImageFilter

    out = []
    for im in images:
        if kind.startswith("blur_s"):
            pil = Image.fromarray(im).filter(ImageFilter.GaussianBlur(float(kind[len("blur_s"):])))
            out.append(np.asarray(pil))
        elif kind == "half_res":
            h, w = im.shape[:2]
            small = Image.fromarray(im).resize((w // 2, h // 2), Image.BOX)
            out.append(np.asarray(small.resize((w, h), Image.BICUBIC)))
        elif kind == "grain":
            out.append(np.clip(im + rng.normal(0, 8, im.shape), 0, 255).astype(np.uint8))
        else:
            raise ValueError(kind)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--data", default=str(DATA / "consep" / "train"))
    parser.add_argument("--tiles", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import wsi_cosynth as wc
    from wsi_cosynth.exporters import read_dataset
    from wsi_cosynth.layouts import layout_from_tile
    from wsi_cosynth.metrics.fid import fid_from_features, kid_from_features
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor, extract_features
    from wsi_cosynth.pipeline.synthetic import default_model_path
    from wsi_cosynth.training.checkpoint import read_metadata

    model_path = args.model or str(default_model_path())
    held_out = read_metadata(model_path).get("data", {}).get("holdout_images") or []
    model = wc.load_model(model_path)
    tiles = list(read_dataset(args.data, "consep", taxonomy=model.taxonomy))
    is_held_out = [any(t.provenance.name.startswith(f"{h}_") for h in held_out) for t in tiles]
    real = [t for t, h in zip(tiles, is_held_out) if h]
    rest = [t for t, h in zip(tiles, is_held_out) if not h]
    rng = np.random.default_rng(args.seed)  # the same draw as default_model_quality.py
    real = [real[i] for i in sorted(rng.choice(len(real), size=min(args.tiles, len(real)), replace=False))]
    others = [rest[i] for i in sorted(np.random.default_rng(args.seed + 1).choice(len(rest), len(real), replace=False))]
    real_images = [t.image for t in real]
    synthetic = wc.synthesize([layout_from_tile(t).with_tissue("colon") for t in real], model, seed=args.seed)
    synthetic_images = [t.image for t in synthetic]
    noise = np.random.default_rng(args.seed + 2)
    sets = {
        "other_real": [t.image for t in others],
        "blur_s1": degraded(real_images, "blur_s1", noise),
        "blur_s2": degraded(real_images, "blur_s2", noise),
        "half_res": degraded(real_images, "half_res", noise),
        "grain": degraded(real_images, "grain", noise),
        "synthetic": synthetic_images,
        "synthetic_colour_matched": colour_matched(synthetic_images, real_images),
    }
    extractor = InceptionFeatureExtractor()
    reference = extract_features(real_images, extractor).features
    rows = {}
    for name, images in sets.items():
        feats = extract_features(images, extractor).features
        kid = kid_from_features(reference, feats, rng=np.random.default_rng(args.seed))
        rgb = np.stack(images).reshape(-1, 3)
        rows[name] = {"kid": round(kid.mean, 5), "fid": round(fid_from_features(reference, feats), 1),
                      "rgb_mean": [round(float(v), 1) for v in rgb.mean(0)],
                      "rgb_std": [round(float(v), 1) for v in rgb.std(0)]}
        print(f"{name:<26} KID {rows[name]['kid']:.5f}  FID {rows[name]['fid']:6.1f}  "
              f"RGB mean {rows[name]['rgb_mean']} std {rows[name]['rgb_std']}", flush=True)
    ref_rgb = np.stack(real_images).reshape(-1, 3)
    print(json.dumps({"model": model_path, "tiles": len(real), "real_rgb_mean": [round(float(v), 1) for v in ref_rgb.mean(0)],
                      "real_rgb_std": [round(float(v), 1) for v in ref_rgb.std(0)], "sets": rows}))


if __name__ == "__main__":
    main()
