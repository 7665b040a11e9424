"""How well a model's tiles stand for slides of other organs: KID/FID and colour, with and without
colour matching to the real tile each layout came from.

Held-out images: one MoNuSeg image per organ (``HELD_OUT``: the first of each organ in
``organs.csv``; hold them out when training a multi-organ model). Each image is tiled at 0.25
um/px in 256 px tiles (stride 256, row-major, the first ``--tiles-per-image``); each tile's
annotated nuclei are its layout, the organ word its tissue prompt. MoNuSeg nuclei have no class:
a model with an unknown class (``model.unknown_class``) gets them as unclassified points, any
other model as its class ``other`` (what ``export --default-class other`` does).

One synthesis per prompt, then three looks of the same synthetic tiles:

- ``none``: as sampled;
- ``tile``: Reinhard-matched in CIELAB to the real tile the layout came from (wsi_cosynth/colour.py);
- ``slide``: matched to the statistics of all the chosen real tiles of that image (a slide region).

Figures: KID and FID of all synthetic tiles against the real tiles (n = images x tiles per
image; KID over 100 subsets of 3/4 of the set); the mean colour difference (CIE 1976 Delta E*ab
between mean tissue colours) between each image's synthetic and real tiles, averaged over images.
Floors, real against real: colour between two halves of one image (alternate tiles) and between
two different images; KID/FID between the held-out images' tiles and a second image per organ
(same n). Note that ``tile`` matching moves each synthetic tile's mean to its real tile's, so its
colour difference is near zero by construction; its KID is the honest figure.

    nice .venv/bin/python benchmarks/organ_fidelity.py [--model DIR] [--tiles-per-image 7]
        [--prompt organ|wrong|WORD] [--figure /tmp/organ_fidelity.jpg] [--samples samples.jpg] [--json out.json]

``--samples`` writes the model card's figure (``samples.jpg``): one row per organ, the real tile
with its annotated nuclei outlined, the synthetic tile from the same layout and prompt (as
sampled), the same with its separated nuclei outlined, and the synthetic tile in the look of its
real tile (``tile`` matching, what ``export --slide`` writes).

Prompts (``--prompt``): ``organ``, each image's own organ (the right prompt); ``wrong``, the next
organ of HELD_OUT's list for each image (lung's tiles prompted "breast", ...); any other word is
the prompt of every tile (``colon``; a word the model never trained on, to see what it draws then).

The organ probe (wsi_cosynth/metrics/organ_probe.py): a linear classifier on Inception features
trained on the real tiles (all of them, ``--probe-tiles`` per image) of every MoNuSeg image that
is not held out; reported: its accuracy on the held-out real tiles, and the share of synthetic
tiles (as sampled, no colour matching) it names as their PROMPTED organ (right or wrong prompt).

Sampling: the model's own settings unless ``--sampler/--steps/--spacing`` say otherwise. Prints a
table and one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("WSI_COSYNTH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MONUSEG = DATA / "monuseg"
SLIDE_MPP = 0.25  # MoNuSeg's TIFFs record no usable resolution (data README)
HELD_OUT = {  # organ -> held-out image: the first of each organ in organs.csv
    "lung": "TCGA-18-5592-01Z-00-DX1",
    "breast": "TCGA-A7-A13E-01Z-00-DX1",
    "kidney": "TCGA-B0-5698-01Z-00-DX1",
    "prostate": "TCGA-CH-5767-01Z-00-DX1",
    "bladder": "TCGA-DK-A2I6-01A-01-TS1",
    "colon": "TCGA-AY-A8YK-01A-01-TS1",
    "stomach": "TCGA-KB-A93J-01A-01-TS1",
}


def organs() -> dict[str, str]:
    with (MONUSEG / "organs.csv").open(newline="") as fh:
        return {row["image"]: row["organ"] for row in csv.DictReader(fh)}


def check_held_out(table: dict[str, str]) -> None:
    """HELD_OUT is the first image of each organ in organs.csv (the data may have changed)."""
    first: dict[str, str] = {}
    for image, organ in table.items():
        first.setdefault(organ, image)
    if first != HELD_OUT:
        raise SystemExit(f"organs.csv's first image per organ is now {first}, not HELD_OUT: update HELD_OUT")


def real_tiles(image: str, tiles_per_image: int):
    """The first ``tiles_per_image`` 256 px tiles of a MoNuSeg image with their (unclassified) nuclei."""
    from wsi_cosynth.pipeline.planning import class_lookup, iter_slide_tiles, labelled_tile, plan_slide
    from wsi_cosynth.taxonomy import get_taxonomy

    nucleus = get_taxonomy("nucleus")
    tif = MONUSEG / "train" / f"{image}.tif"
    with plan_slide(tif, tif.with_suffix(".xml"), mpp=SLIDE_MPP, tile_size=256, slide_mpp=SLIDE_MPP) as plan:
        lookup = class_lookup(plan.annotations, nucleus, None)
        out = []
        for tile in iter_slide_tiles(plan):
            out.append(labelled_tile(plan, tile, nucleus, lookup))
            if len(out) == tiles_per_image:
                break
    return out


def model_layout(tile, model, tissue: str):
    """The tile's nuclei as a layout of the model: unclassified points, or class 'other'."""
    from wsi_cosynth.layouts import layout_from_tile
    from wsi_cosynth.records import UNCLASSIFIED, Layout

    lay = layout_from_tile(tile)
    cls = UNCLASSIFIED if model.supports_unknown_class else model.taxonomy.id_of("other")
    return Layout(xy_tile=lay.xy_tile, classes=np.full(len(lay), cls, dtype=np.int64), size=lay.size,
                  taxonomy=model.taxonomy, provenance=lay.provenance, placement=lay.placement).with_tissue(tissue)


def image_features(images, extractor) -> np.ndarray:
    from wsi_cosynth.metrics.inception import extract_features

    return extract_features(images, extractor).features


def kid_fid(feats_a: np.ndarray, feats_b: np.ndarray, seed: int) -> tuple[float, float]:
    from wsi_cosynth.metrics.fid import fid_from_features, kid_from_features

    subset = max(2, int(0.75 * min(len(feats_a), len(feats_b))))
    kid = kid_from_features(feats_a, feats_b, rng=np.random.default_rng(seed), subset_size=subset, n_subsets=100)
    return kid.mean, fid_from_features(feats_a, feats_b)


def save_figure(path: Path, rows: list[tuple[str, list[np.ndarray]]]) -> None:
    """One row per organ: real tile, synthetic, synthetic matched to its tile, matched to its slide."""
    from PIL import Image, ImageDraw

    from wsi_cosynth.render import tile_grid

    panels = [p for _, row in rows for p in row]
    grid = tile_grid(panels, columns=len(rows[0][1]))
    img = Image.fromarray(grid)
    draw = ImageDraw.Draw(img)
    for i, (organ, _) in enumerate(rows):
        draw.text((8, 8 + i * 260), organ, fill=(0, 0, 0))
    img.save(path, quality=88)


def save_samples(path: Path, real: dict, synthetic_tiles: dict, matched: dict) -> None:
    """The model card's figure: per organ, real with outlines | synthetic | synthetic with its
    separated nuclei outlined | synthetic in its real tile's look."""
    from wsi_cosynth.render import outlines

    save_figure(path, [(o, [outlines(real[o][0]), synthetic_tiles[o][0].image, outlines(synthetic_tiles[o][0]),
                            matched[o][0]]) for o in HELD_OUT])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--tiles-per-image", type=int, default=7)
    parser.add_argument("--prompt", default="organ",
                        help="tissue word of the prompts: each image's organ ('organ'), the next organ's ('wrong'), "
                             "or any other word for every tile (e.g. 'colon', or a word the model never trained on)")
    parser.add_argument("--sampler", default=None, help="default: the model's")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--spacing", default=None, help="default: the model's")
    parser.add_argument("--probe-tiles", type=int, default=9, help="real tiles per training image for the organ probe")
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", type=Path, default=None, help="write a picture: per organ real | synthetic | matched")
    parser.add_argument("--samples", type=Path, default=None,
                        help="write the model card's figure: per organ real | synthetic | outlined | matched")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--save-tiles", type=Path, default=None,
                        help="save the synthetic images (.npz) to score other colour matchings without sampling")
    parser.add_argument("--tiles-from", type=Path, default=None,
                        help="score the synthetic images of a --save-tiles file instead of sampling")
    args = parser.parse_args()

    import torch

    import wsi_cosynth as wc
    from wsi_cosynth.colour import colour_stats, match_colour
    from wsi_cosynth.metrics.colour import colour_difference
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor

    torch.set_num_threads(args.threads)
    table = organs()
    check_held_out(table)
    model = wc.load_model(args.model)
    started = time.perf_counter()
    real, layouts, second, prompted = {}, [], {}, []
    organ_order = list(HELD_OUT)
    for k, (organ, image) in enumerate(HELD_OUT.items()):
        real[organ] = real_tiles(image, args.tiles_per_image)
        tissue = {"organ": organ, "wrong": organ_order[(k + 1) % len(organ_order)]}.get(args.prompt, args.prompt)
        layouts += [model_layout(t, model, tissue) for t in real[organ]]
        prompted += [tissue] * len(real[organ])
        other = next(i for i, o in table.items() if o == organ and i != image)
        second[organ] = real_tiles(other, args.tiles_per_image)
    t0 = time.perf_counter()
    if args.tiles_from is not None:
        if args.samples is not None:
            raise SystemExit("--samples needs the synthetic tiles' nuclei: sample them (no --tiles-from)")
        synthesized = None
        images = list(np.load(args.tiles_from)["images"])
        sample_s = None
    else:
        synthesized = wc.synthesize(layouts, model, sampler=args.sampler, steps=args.steps,
                                    spacing=args.spacing, seed=args.seed, batch_size=4)
        images = [t.image for t in synthesized]
        sample_s = round((time.perf_counter() - t0) / len(images), 2)
    if len(images) != len(layouts):
        raise SystemExit(f"{len(images)} synthetic images for {len(layouts)} layouts")
    if args.save_tiles is not None:
        np.savez_compressed(args.save_tiles, images=np.stack(images))
    synthetic: dict[str, list[np.ndarray]] = {}
    synthetic_tiles: dict[str, list] = {}
    k = 0
    for organ in HELD_OUT:
        synthetic[organ] = images[k:k + len(real[organ])]
        if synthesized is not None:
            synthetic_tiles[organ] = synthesized[k:k + len(real[organ])]
        k += len(real[organ])
    looks = {"none": synthetic}
    looks["tile"] = {o: [match_colour(s, r.image) for s, r in zip(synthetic[o], real[o])] for o in HELD_OUT}
    looks["slide"] = {o: [match_colour(s, colour_stats([r.image for r in real[o]])) for s in synthetic[o]]
                      for o in HELD_OUT}

    extractor = InceptionFeatureExtractor()
    real_all = [t.image for o in HELD_OUT for t in real[o]]
    f_real = image_features(real_all, extractor)
    f_second = image_features([t.image for o in HELD_OUT for t in second[o]], extractor)
    floors = {}
    floors["kid_real_vs_other_images"], floors["fid_real_vs_other_images"] = kid_fid(f_real, f_second, args.seed)
    even, odd = f_real[0::2], f_real[1::2]
    floors["kid_real_halves"], _ = kid_fid(even, odd, args.seed)
    halves = [colour_difference([t.image for t in real[o][0::2]], [t.image for t in real[o][1::2]]) for o in HELD_OUT]
    organs_list = list(HELD_OUT)
    between = [colour_difference([t.image for t in real[a]], [t.image for t in real[b]])
               for i, a in enumerate(organs_list) for b in organs_list[i + 1:]]
    probe_report = None
    if not args.no_probe:
        from wsi_cosynth.metrics.organ_probe import OrganProbe

        train_images = [i for i in table if i not in HELD_OUT.values()]
        probe_tiles = {i: real_tiles(i, args.probe_tiles) for i in train_images}
        f_probe = image_features([t.image for i in train_images for t in probe_tiles[i]], extractor)
        probe = OrganProbe.fit(f_probe, [table[i] for i in train_images for _ in probe_tiles[i]],
                               [i for i in train_images for _ in probe_tiles[i]])
        truth = [o for o in HELD_OUT for _ in real[o]]
        f_none = image_features(images, extractor)
        probe_report = {"train_tiles": len(f_probe), "strength": probe.strength,
                        "real_held_out_accuracy": round(probe.share_named(f_real, truth), 3),
                        "synthetic_named_as_prompted": round(probe.share_named(f_none, prompted), 3),
                        "synthetic_named_as_source_organ": round(probe.share_named(f_none, truth), 3),
                        "chance": round(1 / len(probe.organs), 3)}
        print(json.dumps({"organ_probe": probe_report}), flush=True)
    floors["colour_halves_of_one_image"] = float(np.mean(halves))
    floors["colour_between_images"] = float(np.mean(between))
    rows = []
    for name, look in looks.items():
        f_syn = image_features([im for o in HELD_OUT for im in look[o]], extractor)
        kid, fid = kid_fid(f_syn, f_real, args.seed)
        per_organ = {o: round(colour_difference(look[o], [t.image for t in real[o]]), 2) for o in HELD_OUT}
        rows.append({"colour_match": name, "kid": round(kid, 4), "fid": round(fid, 1),
                     "colour_difference": round(float(np.mean(list(per_organ.values()))), 2),
                     "colour_difference_per_organ": per_organ})
        print(json.dumps(rows[-1]), flush=True)
    result = {"model": args.model or "bundled", "prompt": args.prompt, "held_out": HELD_OUT,
              "n_tiles": len(images), "sampling": {"sampler": args.sampler, "steps": args.steps, "spacing": args.spacing},
              "seconds_per_tile": sample_s, "tiles_from": str(args.tiles_from) if args.tiles_from else None, "floors": {k: round(v, 4) for k, v in floors.items()},
              "rows": rows, "organ_probe": probe_report, "wall_seconds": round(time.perf_counter() - started, 1)}
    if args.figure is not None:
        save_figure(args.figure, [(o, [real[o][0].image, looks["none"][o][0], looks["tile"][o][0], looks["slide"][o][0]])
                                  for o in HELD_OUT])
    if args.samples is not None:
        save_samples(args.samples, real, synthetic_tiles, looks["tile"])
    print(f"{'colour match':<14}{'KID':>8}{'FID':>8}{'dE*ab':>8}")
    for r in rows:
        print(f"{r['colour_match']:<14}{r['kid']:>8.4f}{r['fid']:>8.1f}{r['colour_difference']:>8.2f}")
    print(f"floors: {result['floors']}")
    if probe_report:
        print(f"organ probe: {probe_report}")
    print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
