"""Train the nuclei detector on every labelled source, with and without synthetic tiles, and score
it on held-out images: detection F1 within 12 px per organ, PQ/AJI on held-out tiles, Mpx/s.

Training data: the sources of ``--sources`` (default scripts/organ_sources.yaml: CoNSeP, NuCLS,
MoNuSAC and MoNuSeg at 0.25 um/px, the file's held-out images kept out), every nucleus as class
"nucleus" (the sources share no class set; MoNuSeg has none), tiles drawn with the file's source
balance. Arms:

- ``real``: those tiles;
- ``real_plus_synthetic``: plus ``--synthetic-ratio`` x as many tiles co-synthesised by the
  generator (``--generator``, default the bundled model) from the layouts of real training tiles
  (their own annotated nuclei and tissue word), with their generated instance labels, each in
  the colour of its real tile (``--colour-match tile``, export's default; ``none``: as sampled);
  ``--real-finish F``: the last F of the steps draw real tiles only (learn from both, end on the
  look of real tissue); ``--min-agreement A``: keep only the synthetic tiles on which a teacher
  detector (``--teacher``, default the bundled one) finds the generator's own nuclei with F1_d >= A
  (a tile whose image shows nuclei its label lacks, or lacks nuclei its label has, teaches the
  detector to miss or invent them).

Every detector drops found objects under ``min_area`` px that do not touch the image border
(specks, not nuclei: wsi_cosynth/detection/calibration.py), calibrated from the real training tiles'
labels, the same for both arms (``--min-area PX`` sets it; ``--min-area 0`` turns it off).

Scoring, per arm and seed:

- the held-out MoNuSeg images (one per organ), through the product path (``detect_slide``: windows
  over the image, the seam-free merge), each detection's centroid paired one-to-one (Hungarian)
  with an annotated nucleus's within 12 px (HoVer-Net's F1_d): F1, precision, recall per organ and
  pooled over all nuclei; Mpx/s of that pass;
- the held-out tiles of every source (CoNSeP's train_3/13/23 as well): PQ, AJI, Dice (means over
  tiles) and F1_d of the detector on each 256-px tile alone; the same on the held-out MoNuSeg
  tiles alone (``tiles_monuseg``: the held-out MoNuSeg split, nucleus-only scores).

    nice .venv/bin/python benchmarks/detector.py [--steps 3000] [--seeds 1] [--first-seed 0]
        [--arms real real_plus_synthetic] [--save DIR] [--threads 2]
        [--colour-match tile|none] [--real-finish 0.3] [--min-agreement 0.6 [--teacher DIR]]

``--save DIR`` writes each arm's detector to ``DIR/<arm>`` (seed 0) or ``DIR/<arm>-s<seed>``
(directories `wsi-cosynth detect --detector` takes); ``--score DIR [DIR ...]`` scores saved
detectors the same way without training. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PAIR_RADIUS = 12.0  # px at 0.25 um/px (40x), as HoVer-Net pairs CoNSeP nuclei


def nucleus_only(tiles, taxonomy):
    """The tiles with every nucleus of class 1 of ``taxonomy`` (the "nucleus" taxonomy)."""
    return [replace(t, classes=np.ones(t.n_nuclei, np.int64), taxonomy=taxonomy) for t in tiles]


def layout_sources(n_real: int, n: int, seed: int) -> np.ndarray:
    """Indices of the real tiles whose layouts the ``n`` synthetic tiles take (distinct, random)."""
    return np.random.default_rng(seed).choice(n_real, size=min(n, n_real), replace=False)


def synthetic_tiles(generator, real, n: int, seed: int, *, colour_match: bool = True):
    """``n`` tiles co-synthesised from the layouts of real tiles (drawn evenly), their own tissue
    word; ``colour_match``: each given the colour of the real tile it stands for (what ``export``
    does by default)."""
    import wsi_cosynth as wc
    from wsi_cosynth.layouts import layout_from_tile
    from wsi_cosynth.records import UNCLASSIFIED, Layout

    chosen = layout_sources(len(real), n, seed)
    layouts = []
    for i in chosen:
        lay = layout_from_tile(real[int(i)])
        cls = UNCLASSIFIED if generator.supports_unknown_class else generator.taxonomy.id_of("other")
        layouts.append(Layout(xy_tile=lay.xy_tile, classes=np.full(len(lay), cls, np.int64), size=lay.size,
                              taxonomy=generator.taxonomy, provenance=lay.provenance,
                              placement=lay.placement).with_tissue(real[int(i)].provenance.tissue or "unknown"))
    reference = [real[int(i)].image for i in chosen] if colour_match else None
    return wc.synthesize(layouts, generator, seed=seed, batch_size=4, colour_reference=reference)


def teacher_agreement(teacher, tiles) -> np.ndarray:
    """Per tile: F1_d between the nuclei ``teacher`` finds in the image and the tile's own labelled
    nuclei (1.0 when both are empty: a blank tile agrees with its blank label)."""
    return np.array([label_agreement(t.instances, teacher.predict(t.image).instances) for t in tiles])


def label_agreement(labelled: np.ndarray, found: np.ndarray) -> float:
    """F1_d between two instance maps' nuclei (1.0 when both are empty)."""
    from wsi_cosynth.instances import instance_centroids

    txy, pxy = instance_centroids(labelled), instance_centroids(found)
    txy, pxy = txy[~np.isnan(txy[:, 0])], pxy[~np.isnan(pxy[:, 0])]
    return detection_scores(txy, pxy)["f1"] if len(txy) or len(pxy) else 1.0


def annotated_centroids(tif: Path, xml: Path) -> np.ndarray:
    from wsi_cosynth.pipeline.planning import plan_slide

    with plan_slide(tif, xml, mpp=0.25, tile_size=256, slide_mpp=0.25) as plan:
        return np.asarray(plan.annotations.centroids())


def detection_scores(true_xy: np.ndarray, pred_xy: np.ndarray) -> dict:
    from wsi_cosynth.evaluation.downstream import DetectionCounts

    counts = DetectionCounts.empty()
    counts.add(true_xy, np.ones(len(true_xy), np.int64), pred_xy, np.ones(len(pred_xy), np.int64), radius=PAIR_RADIUS)
    tp = len(np.concatenate(counts.paired_true))
    fp, fn = len(np.concatenate(counts.unpaired_pred)), len(np.concatenate(counts.unpaired_true))
    return {"tp": tp, "fp": fp, "fn": fn, "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1)}


def score_images(detector, images: dict[str, str], monuseg: Path) -> dict:
    """Per organ and pooled F1_d on whole held-out images, through detect_slide; Mpx/s."""
    import tifffile

    from wsi_cosynth.detection import DetectOptions, detect_slide

    per_organ, totals, seconds, mpx = {}, {"tp": 0, "fp": 0, "fn": 0}, 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for organ, image in images.items():
            tif, xml = monuseg / f"{image}.tif", monuseg / f"{image}.xml"
            out = Path(tmp) / f"{image}.geojson"
            t0 = time.perf_counter()
            detect_slide(tif, out, detector, digest="bench", slide_mpp=0.25, options=DetectOptions(min_tissue=0.0))
            seconds += time.perf_counter() - t0
            with tifffile.TiffFile(tif) as f:
                h, w = f.pages[0].shape[:2]
            mpx += h * w / 1e6
            features = json.loads(out.read_text())["features"]
            pred = np.array([np.mean(f["geometry"]["coordinates"][0][:-1], axis=0) for f in features]).reshape(-1, 2)
            s = detection_scores(annotated_centroids(tif, xml), pred)
            per_organ[organ] = {k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()}
            for k in totals:
                totals[k] += s[k]
    tp, fp, fn = totals["tp"], totals["fp"], totals["fn"]
    pooled = {"f1": round(2 * tp / max(2 * tp + fp + fn, 1), 4), "precision": round(tp / max(tp + fp, 1), 4),
              "recall": round(tp / max(tp + fn, 1), 4), **totals}
    return {"pooled": pooled, "per_organ": per_organ, "mpx_per_s": round(mpx / seconds, 3)}


def score_tiles(detector, tiles) -> dict:
    """Mean PQ, AJI, Dice over held-out tiles (each predicted alone) and their pooled F1_d."""
    from wsi_cosynth.instances import instance_centroids
    from wsi_cosynth.metrics.instance_metrics import aji, dice, panoptic_quality

    pq, aj, dc, tp, fp, fn = [], [], [], 0, 0, 0
    for t in tiles:
        found = detector.predict(t.image)
        pq.append(panoptic_quality(t.instances, found.instances).pq)
        aj.append(aji(t.instances, found.instances))
        dc.append(dice(t.instances, found.instances))
        txy, pxy = instance_centroids(t.instances), instance_centroids(found.instances)
        s = detection_scores(txy[~np.isnan(txy[:, 0])], pxy[~np.isnan(pxy[:, 0])])
        tp, fp, fn = tp + s["tp"], fp + s["fp"], fn + s["fn"]
    return {"pq": round(float(np.mean(pq)), 4), "aji": round(float(np.mean(aj)), 4), "dice": round(float(np.mean(dc)), 4),
            "f1": round(2 * tp / max(2 * tp + fp + fn, 1), 4), "n_tiles": len(tiles)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default=str(REPO / "scripts" / "organ_sources.yaml"))
    parser.add_argument("--arms", nargs="+", default=["real", "real_plus_synthetic"])
    parser.add_argument("--generator", default=None, help="generator checkpoint for synthetic tiles (default: bundled)")
    parser.add_argument("--synthetic-ratio", type=float, default=0.5)
    parser.add_argument("--colour-match", choices=("tile", "none"), default="tile",
                        help="synthetic tiles in the colour of the real tile each stands for (export's default) or as sampled")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--widths", default="16,32,64,128")
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--h", type=float, default=0.1, help="h-maxima height of the watershed")
    parser.add_argument("--min-area", default=None, metavar="PX|auto",
                        help="speck filter: drop found objects under PX px; auto: calibrated from the real training "
                             "labels (calibration.py; the default when training); default when scoring: each "
                             "detector's own")
    parser.add_argument("--real-finish", type=float, default=0.0, metavar="FRACTION",
                        help="real_plus_synthetic: the last FRACTION of the steps draw real tiles only")
    parser.add_argument("--min-agreement", type=float, default=0.0, metavar="F1",
                        help="keep synthetic tiles whose labels a teacher detector finds with F1_d >= this")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher detector directory (default: bundled)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--score", type=Path, nargs="+", default=None, metavar="DIR",
                        help="score these saved detectors (e.g. an earlier run's --save DIR/<arm>) instead of training")
    args = parser.parse_args()

    import torch

    import wsi_cosynth as wc
    from wsi_cosynth.detection import Detector
    from wsi_cosynth.detection.calibration import speck_area
    from wsi_cosynth.detection.segmenter import SegmenterConfig, train_segmenter
    from wsi_cosynth.taxonomy import get_taxonomy
    from wsi_cosynth.training.mixture import image_key, load_sources
    from wsi_cosynth.training.sources_file import read_sources_file

    sys.path.insert(0, str(REPO / "benchmarks"))
    from organ_fidelity import HELD_OUT, MONUSEG  # the held-out image of each organ

    torch.set_num_threads(args.threads)
    if args.min_area not in (None, "auto") and not args.min_area.isdigit():
        parser.error(f"--min-area must be a number of px or auto, not {args.min_area!r}")
    nucleus = get_taxonomy("nucleus")
    sources = read_sources_file(args.sources)
    mixed = load_sources(sources.sources, tile_size=256, balance=sources.balance or "sqrt", unknown_class=True,
                         holdout=sources.holdout_images)
    real = nucleus_only(mixed.tiles, nucleus)
    held_tiles = nucleus_only(mixed.validation, nucleus)
    # The held-out MoNuSeg split alone (nucleus-only scores): the downstream measure of organ training.
    held_keys = tuple(image_key(stem) for stem in HELD_OUT.values())  # tile names spell images as safe stems
    monuseg_tiles = [t for t in held_tiles if image_key(t.provenance.name).startswith(held_keys)]
    if len(monuseg_tiles) == 0:
        raise SystemExit(f"no held-out tile comes from the MoNuSeg images {list(HELD_OUT.values())}")

    # The speck filter comes from the real training labels only, so that both arms share it.
    min_area = None if args.min_area is None and args.score is not None else (
        speck_area(real) if args.min_area in (None, "auto") else int(args.min_area))

    def scores(detector) -> dict:
        return {"min_area": detector.min_area, "images": score_images(detector, HELD_OUT, MONUSEG / "train"),
                "tiles": score_tiles(detector, held_tiles), "tiles_monuseg": score_tiles(detector, monuseg_tiles)}

    if args.score is not None:
        from wsi_cosynth.detection.model import load_detector

        loaded = {str(d): load_detector(d) for d in args.score}
        scored = {d: scores(det if min_area is None else replace(det, min_area=min_area)) for d, det in loaded.items()}
        for d, r in scored.items():
            print(f"{d} (min_area {loaded[d].min_area if min_area is None else min_area}): "
                  f"F1 images {r['images']['pooled']['f1']:.4f}, PQ tiles {r['tiles']['pq']:.4f}, "
                  f"PQ MoNuSeg tiles {r['tiles_monuseg']['pq']:.4f} (n = {r['tiles_monuseg']['n_tiles']})")
        print(json.dumps({"scored": scored}))
        if args.json is not None:
            args.json.write_text(json.dumps({"scored": scored}, indent=1))
        return
    widths = tuple(int(v) for v in args.widths.split(","))
    config = SegmenterConfig(widths=widths, steps=args.steps, batch_size=args.batch_size, crop=args.crop, lr=args.lr,
                             h=args.h, threads=args.threads)
    report = {"train_tiles": len(real), "held_out_tiles": len(held_tiles), "config": config.to_dict(),
              "min_area": min_area, "arms": {}}
    synthetic = []
    if "real_plus_synthetic" in args.arms:
        generator = wc.load_model(args.generator)
        t0 = time.perf_counter()
        synthetic = nucleus_only(synthetic_tiles(generator, mixed.tiles, int(args.synthetic_ratio * len(real)), 0,
                                                 colour_match=args.colour_match == "tile"), nucleus)
        report["synthesis_seconds"] = round(time.perf_counter() - t0, 1)
        if args.min_agreement > 0:
            from wsi_cosynth.api import default_detector_path
            from wsi_cosynth.detection.model import load_detector

            teacher = load_detector(args.teacher or default_detector_path())
            agreement = teacher_agreement(teacher, synthetic)
            report["agreement"] = {"min": args.min_agreement, "teacher": str(args.teacher or "bundled"),
                                   "synthesised": len(synthetic), "median": round(float(np.median(agreement)), 4)}
            synthetic = [t for t, a in zip(synthetic, agreement) if a >= args.min_agreement]
        report["synthetic_tiles"] = len(synthetic)
        report["generator"] = args.generator or "bundled"
        report["colour_match"] = args.colour_match
        report["real_finish"] = args.real_finish
    for arm in args.arms:
        tiles = real + (synthetic if arm == "real_plus_synthetic" else [])
        # Synthetic tiles share the real tiles' draw: each stands for the real tile it came from.
        weights = np.concatenate([mixed.weights, np.full(len(tiles) - len(real), mixed.weights.mean())])
        runs = []
        for k in range(args.first_seed, args.first_seed + args.seeds):
            t0 = time.perf_counter()
            finish = None
            if arm == "real_plus_synthetic" and args.real_finish > 0:
                real_only = np.concatenate([mixed.weights, np.zeros(len(tiles) - len(real))])
                finish = (int(round(args.real_finish * args.steps)), real_only)
            net = train_segmenter(tiles, 1, replace(config, seed=k), weights=weights, finish=finish)
            train_s = time.perf_counter() - t0
            detector = Detector(net, nucleus, mpp=0.25, h=args.h, widths=widths, min_area=min_area,
                                info={"arm": arm, "steps": args.steps, "seed": k, "train_tiles": len(tiles),
                                      "sources": [s["name"] for s in mixed.summary.get("sources", [])],
                                      "synthetic_tiles": len(tiles) - len(real),
                                      "held_out_images": list(mixed.held_out)})
            run = {"seed": k, "train_seconds": round(train_s, 1), **scores(detector)}
            print(json.dumps({arm: run}), flush=True)
            runs.append(run)
            if args.save is not None:
                detector.save(args.save / (arm if k == 0 else f"{arm}-s{k}"))
        report["arms"][arm] = runs
    print(f"{'arm':<22}{'seed':>5}{'F1 images':>10}{'P':>7}{'R':>7}{'PQ tiles':>9}{'F1 tiles':>9}"
          f"{'PQ MoNuSeg':>11}{'Mpx/s':>7}")
    for arm, runs in report["arms"].items():
        for r in runs:
            im, tl, mo = r["images"], r["tiles"], r["tiles_monuseg"]
            print(f"{arm:<22}{r['seed']:>5}{im['pooled']['f1']:>10.3f}{im['pooled']['precision']:>7.3f}"
                  f"{im['pooled']['recall']:>7.3f}{tl['pq']:>9.3f}{tl['f1']:>9.3f}{mo['pq']:>11.3f}{im['mpx_per_s']:>7.2f}")
    print(json.dumps(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
