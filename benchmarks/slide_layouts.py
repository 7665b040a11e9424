"""How close are an unannotated slide's layouts to its real ones? Detected vs resampled layouts.

On each held-out MoNuSeg image (one per organ, ``organ_fidelity.HELD_OUT``), the real layouts are
its annotated nuclei on the 256-px tissue tiles at 0.25 um/px (what ``export --annotations``
uses). Compared with them, through the export's own code (``choose_layouts``):

- ``detected``: the bundled detector's nuclei on the same tiles (what ``export`` now does on a
  slide without annotations);
- ``resample_consep``: layouts drawn from the bundled CoNSeP layout model (what it did before);
- ``resample_detected``: drawn from a model fitted to the slide's detections (``--layouts
  resample`` on an unannotated slide);
- ``resample_annotated``: drawn from a model fitted to the slide's annotations (the same on an
  annotated slide; the best a fitted process can do).

Scores, pooled over the images: mean nuclei per tile (real: the annotated count) and
``layout_distance(x, real).total`` (per-statistic Wasserstein / pooled s.d., mean over groups;
~0.1 between two halves of one dataset). Resampled sets draw ``--draws`` layouts per tile.

    nice .venv/bin/python benchmarks/slide_layouts.py [--draws 4] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from organ_fidelity import HELD_OUT, MONUSEG  # noqa: E402

from wsi_cosynth.layouts.stats import layout_distance  # noqa: E402
from wsi_cosynth.pipeline.layouts_for_slide import choose_layouts  # noqa: E402
from wsi_cosynth.pipeline.planning import plan_slide  # noqa: E402
from wsi_cosynth.taxonomy import get_taxonomy  # noqa: E402

NUCLEUS = get_taxonomy("nucleus")
CONSEP_AS_NUCLEUS = {name: "nucleus" for name in get_taxonomy("consep").names}


def layouts_of(tif: Path, annotations: Path, *, layouts: str, layout_model=None, seed: int = 0,
               class_map=None) -> list:
    with plan_slide(tif, annotations, mpp=0.25, tile_size=256, slide_mpp=0.25, min_tissue=0.5) as plan:
        chosen, _ = choose_layouts(plan, NUCLEUS, layouts=layouts, layout_model=layout_model, class_map=class_map,
                                   default_class=None, max_tiles=None, seed=seed, tissue=None)
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=4, help="resampled layouts per tile (seeds 0..draws-1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    from wsi_cosynth.api import default_detector_path
    from wsi_cosynth.detection import detect_slide, load_detector
    from wsi_cosynth.detection.slide_detect import detector_digest
    from wsi_cosynth.pipeline.layouts_for_slide import default_layout_model_path

    torch.set_num_threads(args.threads)
    detector = load_detector(default_detector_path())
    digest = detector_digest(default_detector_path())
    sets: dict[str, list] = {k: [] for k in ("real", "detected", "resample_consep", "resample_detected",
                                             "resample_annotated")}
    per_image = {}
    with tempfile.TemporaryDirectory() as tmp:
        for organ, stem in HELD_OUT.items():
            t0 = time.perf_counter()
            tif, xml = MONUSEG / "train" / f"{stem}.tif", MONUSEG / "train" / f"{stem}.xml"
            found = Path(tmp) / f"{stem}.geojson"
            detect_slide(tif, found, detector, digest=digest, slide_mpp=0.25, progress=False)
            real = layouts_of(tif, xml, layouts="annotations")
            detected = layouts_of(tif, found, layouts="annotations")
            drawn = {
                "resample_consep": [lay for s in range(args.draws) for lay in layouts_of(
                    tif, xml, layouts="resample", layout_model=default_layout_model_path(), seed=s,
                    class_map=CONSEP_AS_NUCLEUS)],
                "resample_detected": [lay for s in range(args.draws) for lay in layouts_of(
                    tif, found, layouts="resample", seed=s)],
                "resample_annotated": [lay for s in range(args.draws) for lay in layouts_of(
                    tif, xml, layouts="resample", seed=s)],
            }
            sets["real"] += real
            sets["detected"] += detected
            for k, v in drawn.items():
                sets[k] += v
            per_image[organ] = {"tiles": len(real), "real_per_tile": float(np.mean([len(x) for x in real])),
                                **{k: float(np.mean([len(x) for x in v])) for k, v in
                                   [("detected", detected), *drawn.items()]}}
            print(f"{organ:9s} {stem}: " + ", ".join(f"{k} {v:.1f}" for k, v in per_image[organ].items()
                                                     if k != "tiles") + f" nuclei/tile ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    real = sets["real"]
    pooled = {k: {"per_tile": round(float(np.mean([len(x) for x in v])), 2),
                  "layout_distance": round(layout_distance(v, real).total, 4) if k != "real" else 0.0}
              for k, v in sets.items()}
    half_a, half_b = real[0::2], real[1::2]
    pooled["real_half_vs_half"] = {"layout_distance": round(layout_distance(half_a, half_b).total, 4)}
    for k, v in pooled.items():
        print(f"{k:20s} {v}")
    report = {"per_image": per_image, "pooled": pooled, "draws": args.draws}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
