"""Do the generator's labels say what its images show? A teacher detector's view, per organ.

The synthetic tiles ``benchmarks/detector.py`` trains on (the default generator, layouts and tissue
words of randomly chosen real training tiles of ``scripts/organ_sources.yaml``, seed 0), scored by
a detector trained on real tiles only (``--teacher``, default the bundled one, whose training kept
the same images out): the nuclei it finds in each synthetic image against the generator's own
instance labels, F1_d within 12 px (a blank tile with a blank label counts 1) and PQ. Two looks of
the same tiles: as sampled, and colour-matched to the real tile whose layout they took (export's
default); and, as the yardstick, the real tiles themselves against their annotations. A tile whose
image shows nuclei its label lacks, or lacks nuclei its label has, scores low: it would teach a
detector to miss or invent nuclei (``detector.py --min-agreement``).

    nice .venv/bin/python benchmarks/synthetic_agreement.py [--ratio 0.5] [--threads 2] [--json out.json]

Prints a table per tissue word and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default=str(REPO / "scripts" / "organ_sources.yaml"))
    parser.add_argument("--generator", default=None, help="generator checkpoint (default: bundled)")
    parser.add_argument("--teacher", type=Path, default=None, help="detector directory (default: bundled)")
    parser.add_argument("--ratio", type=float, default=0.5, help="synthetic tiles per real training tile")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    import wsi_cosynth as wc
    from wsi_cosynth.api import default_detector_path
    from wsi_cosynth.colour import match_colour
    from wsi_cosynth.detection.model import load_detector
    from wsi_cosynth.metrics.instance_metrics import panoptic_quality
    from wsi_cosynth.training.mixture import load_sources
    from wsi_cosynth.training.sources_file import read_sources_file

    sys.path.insert(0, str(REPO / "benchmarks"))
    from detector import label_agreement, layout_sources, synthetic_tiles

    torch.set_num_threads(args.threads)
    sources = read_sources_file(args.sources)
    mixed = load_sources(sources.sources, tile_size=256, balance=sources.balance or "sqrt", unknown_class=True,
                         holdout=sources.holdout_images)
    real = mixed.tiles
    n = int(args.ratio * len(real))
    t0 = time.perf_counter()
    sampled = synthetic_tiles(wc.load_model(args.generator), real, n, 0, colour_match=False)
    synthesis_s = time.perf_counter() - t0
    sources_of = [real[int(i)] for i in layout_sources(len(real), n, 0)]  # the tile each one stands for
    matched = [replace(t, image=match_colour(t.image, r.image)) for t, r in zip(sampled, sources_of)]
    teacher = load_detector(args.teacher or default_detector_path())

    def agreement(tiles) -> dict[str, np.ndarray]:
        found = [teacher.predict(t.image).instances for t in tiles]
        return {"f1": np.array([label_agreement(t.instances, f) for t, f in zip(tiles, found)]),
                "pq": np.array([panoptic_quality(t.instances, f).pq for t, f in zip(tiles, found)])}

    looks = {"sampled": sampled, "colour_matched": matched, "real": sources_of}
    scores = {look: agreement(tiles) for look, tiles in looks.items()}
    tissue = np.array([r.provenance.tissue or "unknown" for r in sources_of])
    rows: dict[str, dict] = defaultdict(dict)
    for word in [*sorted(set(tissue)), "all"]:
        keep = np.ones(len(tissue), bool) if word == "all" else tissue == word
        rows[word]["n"] = int(keep.sum())
        for look, s in scores.items():
            rows[word][look] = {"f1": round(float(s["f1"][keep].mean()), 4), "pq": round(float(s["pq"][keep].mean()), 4)}
    print(f"{'tissue':<10}{'n':>5}" + "".join(f"{look + ' F1':>20}{'PQ':>7}" for look in looks))
    for word, r in rows.items():
        print(f"{word:<10}{r['n']:>5}" + "".join(f"{r[look]['f1']:>20.3f}{r[look]['pq']:>7.3f}" for look in looks))
    for look in ("sampled", "colour_matched"):
        f1 = scores[look]["f1"]
        print(f"{look}: F1_d percentiles 10/25/50 = {np.percentile(f1, [10, 25, 50]).round(3).tolist()}, "
              f"share under 0.6 = {(f1 < 0.6).mean():.3f}")
    report = {"tiles": len(sampled), "synthesis_seconds": round(synthesis_s, 1), "per_tissue": rows,
              "share_under_0_6": {look: round(float((scores[look]["f1"] < 0.6).mean()), 4)
                                  for look in ("sampled", "colour_matched")}}
    print(json.dumps(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
