"""Which text front end generalises to tissue words a model never trained on: the learned prompt
vocabulary or the bundled offline sentence encoder (all-MiniLM-L6-v2)?

Same generator for both, so that only the front end differs. The model's learned encoder embeds a
prompt as the mean of its word vectors; a word outside its training prompts gets <unk> or an
embedding training never moved. The MiniLM front end embeds the prompt with MiniLM (384-d) and
maps it onto the learned encoder's output space with a ridge least-squares map fitted on every
prompt the model trained with (each trained tissue word x each set of class words present): on
those prompts it reproduces the learned embedding; on a new word it interpolates between the
trained prompts by MiniLM's semantics ("renal" lands near "kidney" if MiniLM puts it there). This
is the zero-shot version of the comparison; a model trained with MiniLM from the start is not
measured here.

Two tests, sampled with the model's own settings, seed 0:

- synonyms: the held-out MoNuSeg tiles of ``organ_fidelity.py`` (7 organs x 7 tiles) prompted
  with a word for their organ that no training prompt holds (lung -> "pulmonary", kidney ->
  "renal", ...), and with the trained organ word as reference. Scores: KID against the real tiles
  and the organ probe's share of tiles named as their source organ (real held-out tiles: 63%).
- an unseen organ: the demo's ovarian carcinoma image (histolytics ``hgsc_nest``, 1500 x 1500 at
  0.25 um/px, its nuclei as layouts; no ovary in any training source), prompted "ovarian",
  "ovary" (in the learned vocabulary, never trained), "unknown" (the trained word of sources of
  unrecorded organ) and "colon". Score: KID against its real tiles (n = 25: noisy, about +-0.01).

    nice .venv/bin/python benchmarks/text_encoders.py [--model DIR] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from organ_fidelity import HELD_OUT, image_features, kid_fid, model_layout, organs, real_tiles  # noqa: E402

SYNONYMS = {"lung": "pulmonary", "breast": "mammary", "kidney": "renal", "prostate": "prostatic",
            "bladder": "urothelial", "colon": "colorectal", "stomach": "gastric"}
UNSEEN_ORGAN_PROMPTS = ("ovarian", "ovary", "unknown", "colon")


class MappedSentenceEncoder(nn.Module):
    """A frozen sentence encoder whose embeddings are mapped linearly onto a learned encoder's."""

    def __init__(self, sentence_encoder, mapping: torch.Tensor, encoder_id: str) -> None:
        super().__init__()
        self.sentence_encoder = sentence_encoder
        self.register_buffer("mapping", mapping)
        self.dim = mapping.shape[0]
        self.encoder_id = encoder_id

    def encode(self, prompts: list[str], device) -> torch.Tensor:
        return self.sentence_encoder.encode(prompts, device) @ self.mapping.T.to(device)


def training_prompts(model) -> list[str]:
    """Every prompt the model trained with: each trained tissue x each set of class words present."""
    from wsi_cosynth.models.text import build_prompt, prompt_class_names

    words = prompt_class_names(list(model.taxonomy.names), unknown_class=model.supports_unknown_class)
    sets = [list(c) for r in range(len(words) + 1) for c in itertools.combinations(words, r)]
    generator = torch.Generator().manual_seed(0)
    return [build_prompt(t, s, g) for t in sorted(model.trained_tissues) for s in sets
            for g in (None, generator)]  # two orders of the class words: MiniLM reads order, the mean does not


def fit_mapping(learned, sentence, prompts: list[str], ridge: float = 1e-3) -> torch.Tensor:
    """(D_learned, D_sentence) ridge least-squares map from sentence to learned embeddings."""
    with torch.no_grad():
        y = learned.encode(prompts, "cpu").double()
        x = sentence.encode(prompts, "cpu").double()
    gram = x.T @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, x.T @ y).T.float()


def ovarian_tiles(model):
    """The demo's ovarian image as 256-px tiles with its nuclei in the model's classes."""
    from wsi_cosynth.demo import build_demo_slide
    from wsi_cosynth.pipeline.planning import class_lookup, iter_slide_tiles, labelled_tile, plan_slide

    out = Path(tempfile.mkdtemp(prefix="text-encoders-"))
    slide = build_demo_slide(out)
    with plan_slide(slide, slide.with_suffix(".geojson"), mpp=0.25, tile_size=256, min_tissue=0.5) as plan:
        lookup = class_lookup(plan.annotations, model.taxonomy, None)
        return [labelled_tile(plan, t, model.taxonomy, lookup) for t in iter_slide_tiles(plan)]


def synthesize(model, layouts, seed: int) -> list[np.ndarray]:
    import wsi_cosynth as wc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained words are the point here
        return [t.image for t in wc.synthesize(layouts, model, seed=seed, batch_size=4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint with a learned text encoder (default: bundled)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import wsi_cosynth as wc
    from wsi_cosynth.layouts import layout_from_tile
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor
    from wsi_cosynth.metrics.organ_probe import OrganProbe
    from wsi_cosynth.models.text import MiniLMTextEncoder

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = wc.load_model(args.model)
    learned = model.text_encoder
    if getattr(learned, "encoder_id", None) != "learned" or not model.trained_tissues:
        raise SystemExit("--model needs a learned text encoder and its recorded training tissues")
    minilm = MiniLMTextEncoder()
    prompts = training_prompts(model)
    mapping = fit_mapping(learned, minilm, prompts)
    with torch.no_grad():
        fit_error = float((minilm.encode(prompts, "cpu") @ mapping.T - learned.encode(prompts, "cpu")).norm(dim=1).mean()
                          / learned.encode(prompts, "cpu").norm(dim=1).mean())
    mapped = MappedSentenceEncoder(minilm, mapping, "minilm mapped onto learned")
    front_ends = {"learned": learned, "minilm": mapped}
    print(f"mapping fitted on {len(prompts)} training prompts, relative error {fit_error:.4f}", flush=True)

    extractor = InceptionFeatureExtractor()
    table = organs()
    real = {o: real_tiles(image, 7) for o, image in HELD_OUT.items()}
    truth = [o for o in HELD_OUT for _ in real[o]]
    f_real = image_features([t.image for o in HELD_OUT for t in real[o]], extractor)
    train_images = [i for i in table if i not in HELD_OUT.values()]
    probe_tiles = {i: real_tiles(i, 9) for i in train_images}
    probe = OrganProbe.fit(image_features([t.image for i in train_images for t in probe_tiles[i]], extractor),
                           [table[i] for i in train_images for _ in probe_tiles[i]],
                           [i for i in train_images for _ in probe_tiles[i]])

    rows = []
    for word_kind in ("trained", "synonym"):
        for name, encoder in front_ends.items():
            model.text_encoder = encoder
            layouts = [model_layout(t, model, o if word_kind == "trained" else SYNONYMS[o])
                       for o in HELD_OUT for t in real[o]]
            f_syn = image_features(synthesize(model, layouts, args.seed), extractor)
            kid, fid = kid_fid(f_syn, f_real, args.seed)
            rows.append({"test": "monuseg", "words": word_kind, "front_end": name, "kid": round(kid, 4),
                         "fid": round(fid, 1), "probe_named_as_source_organ": round(probe.share_named(f_syn, truth), 3)})
            print(json.dumps(rows[-1]), flush=True)

    model.text_encoder = learned
    ovary = ovarian_tiles(model)
    f_ovary = image_features([t.image for t in ovary], extractor)
    for word in UNSEEN_ORGAN_PROMPTS:
        for name, encoder in front_ends.items():
            if name == "minilm" and word in ("unknown", "colon"):
                continue  # trained words: the mapped front end reproduces the learned embedding
            model.text_encoder = encoder
            layouts = [layout_from_tile(t).with_tissue(word) for t in ovary]
            f_syn = image_features(synthesize(model, layouts, args.seed), extractor)
            kid, fid = kid_fid(f_syn, f_ovary, args.seed)
            rows.append({"test": "ovarian", "words": word, "front_end": name, "kid": round(kid, 4), "fid": round(fid, 1)})
            print(json.dumps(rows[-1]), flush=True)
    model.text_encoder = learned

    result = {"model": args.model or "bundled", "mapping_prompts": len(prompts), "mapping_relative_error": round(fit_error, 4),
              "synonyms": SYNONYMS, "ovarian_tiles": len(ovary), "monuseg_tiles": len(truth),
              "probe_real_accuracy": round(probe.share_named(f_real, truth), 3), "rows": rows,
              "wall_seconds": round(time.perf_counter() - started, 1)}
    print(f"{'test':<9}{'words':<12}{'front end':<10}{'KID':>8}{'FID':>8}{'probe':>7}")
    for r in rows:
        print(f"{r['test']:<9}{r['words']:<12}{r['front_end']:<10}{r['kid']:>8.4f}{r['fid']:>8.1f}"
              f"{r.get('probe_named_as_source_organ', float('nan')):>7.3f}")
    print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
