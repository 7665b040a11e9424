"""The downstream benchmark: reference segmenter, HoVer-Net F1 pairing, and arms that differ only
in their training data (tiny configs)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from wsi_cosynth.evaluation.downstream import (ARMS, DetectionCounts, SyntheticPlan, build_arms, plan_layouts,
                                               run_arm, synthesize_training_tiles)
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.detection.segmenter import SegmenterConfig, predict_instances, train_segmenter
from wsi_cosynth.records import LabelledTile, Provenance, relabel_contiguous
from wsi_cosynth.taxonomy import get_taxonomy

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY_SEG = SegmenterConfig(widths=(8, 16), steps=3, batch_size=2, crop=32, threads=1)


def _crop(tile: LabelledTile, size: int, name: str) -> LabelledTile:
    inst, cls = relabel_contiguous(tile.instances[:size, :size], np.concatenate([[0], tile.classes]))
    return LabelledTile(tile.image[:size, :size].copy(), inst, cls, tile.taxonomy,
                        replace(tile.provenance, name=name))


@pytest.fixture(scope="module")
def small_tiles():
    from conftest import data_path

    from wsi_cosynth.exporters import read_dataset

    tiles = list(itertools.islice(read_dataset(data_path("consep", "train"), "consep"), 6))
    return [_crop(t, 32, f"crop_{i}") for i, t in enumerate(tiles)]


def _discs(rng: np.random.Generator, n_tiles: int, size: int = 64) -> list[LabelledTile]:
    """Generated tiles: dark purple discs (class 1 or 2 by size) on pink, with their instances."""
    tax = get_taxonomy("consep")
    out = []
    yy, xx = np.mgrid[:size, :size]
    for k in range(n_tiles):
        image = np.empty((size, size, 3), np.uint8)
        image[:] = (235, 190, 215)
        inst = np.zeros((size, size), np.int32)
        classes = []
        for _ in range(int(rng.integers(3, 7))):
            cx, cy = rng.uniform(8, size - 8, 2)
            big = rng.random() < 0.5
            r = 6.0 if big else 4.0
            disc = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r) & (inst == 0)
            if disc.sum() < 10:
                continue
            classes.append(3 if big else 2)
            inst[disc] = len(classes)
            image[disc] = (70, 40, 120) if big else (40, 20, 90)
        noise = rng.normal(0, 6, image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        out.append(LabelledTile(image, inst, np.array(classes, np.int64), tax, Provenance(name=f"disc_{k}")))
    return out


def test_hovernet_f1_pairs_within_12_px():
    counts = DetectionCounts.empty()
    true_xy = np.array([[10, 10], [50, 50], [100, 100]], float)
    pred_xy = np.array([[12, 10], [50, 58], [200, 200]], float)
    counts.add(true_xy, np.array([1, 2, 1]), pred_xy, np.array([1, 1, 2]))
    detection, per_class = counts.f1([1, 2])
    # 2 pairs, 1 unpaired true, 1 unpaired prediction
    assert detection == pytest.approx(4 / 6)
    # class 1: TP 1, FP 1 (a class-2 nucleus called 1), unpaired true of class 1: 1 -> 2 / (2 + 2 + 1)
    # class 2: TN 1, FN 1, unpaired prediction of class 2: 1 -> 2 / (2 + 2 + 1)
    assert per_class == {1: pytest.approx(0.4), 2: pytest.approx(0.4)}
    far = DetectionCounts.empty()
    far.add(np.array([[0.0, 0.0]]), np.array([1]), np.array([[0.0, 13.0]]), np.array([1]))
    assert far.f1([1])[0] == 0.0  # 13 px apart: not a pair


def test_segmenter_learns_generated_nuclei():
    rng = np.random.default_rng(0)
    train, test = _discs(rng, 24), _discs(rng, 6)
    config = SegmenterConfig(widths=(8, 16, 32), steps=120, batch_size=4, crop=64, lr=1e-2, threads=1)
    net = train_segmenter(train, 4, config)
    from wsi_cosynth.metrics.instance_metrics import panoptic_quality

    pq = [panoptic_quality(t.instances, predict_instances(net, t.image, h=config.h)[0]).pq for t in test]
    assert float(np.mean(pq)) > 0.6


def test_segmenter_is_deterministic_for_the_same_data_and_seed(small_tiles):
    a = train_segmenter(small_tiles, 4, TINY_SEG)
    b = train_segmenter(small_tiles, 4, TINY_SEG)
    c = train_segmenter(small_tiles[::-1][:3], 4, TINY_SEG)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # other data, other weights


def test_segmenter_finishes_on_the_tiles_its_finish_weights_draw(small_tiles):
    """Finishing every step on the first tile is training on the first tile alone; finishing
    one step on it changes only what that step drew; bad finishing steps are refused."""
    only_first = [1.0] + [0.0] * (len(small_tiles) - 1)
    a = train_segmenter(small_tiles, 4, TINY_SEG, weights=only_first)
    b = train_segmenter(small_tiles, 4, TINY_SEG, finish=(TINY_SEG.steps, only_first))
    c = train_segmenter(small_tiles, 4, TINY_SEG, finish=(1, only_first))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    with pytest.raises(CosynthError, match="finishing steps"):
        train_segmenter(small_tiles, 4, TINY_SEG, finish=(TINY_SEG.steps + 1, only_first))
    with pytest.raises(CosynthError, match="weights must be"):
        train_segmenter(small_tiles, 4, TINY_SEG, finish=(1, [1.0]))


def test_arms_differ_only_in_training_data_and_score_end_to_end(small_tiles):
    from wsi_cosynth.models.config import load_config
    from wsi_cosynth.models.cosynth import CosynthModel

    tax = small_tiles[0].taxonomy
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CosynthModel(load_config("tiny"), tax, mpp=0.25).eval()
    real, test = small_tiles[:4], small_tiles[4:]
    plan = SyntheticPlan(ratio=1.0, resampled_share=0.0, per_layout=2, steps=2, guidance=2.0, tissue="colon")
    synthetic = synthesize_training_tiles(model, real, plan, batch_size=2)
    assert len(synthetic) == 4 and all(t.size == (32, 32) for t in synthetic)
    arms = build_arms(real, synthetic, TINY_SEG)
    assert [a.name for a in arms] == list(ARMS)
    assert all(a.config == TINY_SEG for a in arms)  # one segmenter config, seeds included
    names = [sorted(t.provenance.name for t in a.tiles) for a in arms]
    real_names = sorted(t.provenance.name for t in real)
    syn_names = sorted(t.provenance.name for t in synthetic)
    assert names[0] == real_names and names[2] == syn_names and names[1] == sorted(real_names + syn_names)
    scores = {a.name: run_arm(a, test, tax) for a in arms}
    for s in scores.values():
        assert set(s) >= {"dice", "aji", "pq", "dq", "sq", "f1_detection", "f1_classes"}
        assert all(0.0 <= s[k] <= 1.0 for k in ("dice", "aji", "pq", "dq", "sq"))
        assert set(s["f1_classes"]) == set(tax.names)
        assert s["pq_per_seed"] == [s["pq"]]  # one seed: its PQ is the mean
    assert scores["real_only"]["n_train_tiles"] == 4 and scores["real_plus_synthetic"]["n_train_tiles"] == 8


def test_arms_can_be_chosen_and_only_the_chosen_ones_need_synthetic_tiles(small_tiles):
    real, synthetic = small_tiles[:3], small_tiles[3:5]
    (only,) = build_arms(real, [], TINY_SEG, ["real_only"])  # no synthesis needed for it
    assert only.name == "real_only" and only.tiles == tuple(real)
    picked = build_arms(real, synthetic, TINY_SEG, ["synthetic_only", "real_only"])
    assert [a.name for a in picked] == ["real_only", "synthetic_only"]  # always in ARMS order
    with pytest.raises(CosynthError, match="synthetic"):
        build_arms(real, [], TINY_SEG, ["real_only", "synthetic_only"])
    with pytest.raises(CosynthError, match="unknown arm"):
        build_arms(real, synthetic, TINY_SEG, ["real_only", "synthetc_only"])


def test_plan_layouts_mixes_own_and_resampled_layouts(small_tiles):
    from wsi_cosynth.layouts.point_process import load_layout_model
    from wsi_cosynth.pipeline.layouts_for_slide import default_layout_model_path

    model = load_layout_model(default_layout_model_path())  # fitted on CoNSeP; fitting here would take minutes
    plan = SyntheticPlan(ratio=2.0, resampled_share=0.5, per_layout=1, seed=3)
    layouts = plan_layouts(small_tiles, plan, layout_model=model)
    assert len(layouts) == 12
    resampled = [lay for lay in layouts if lay.provenance.name.startswith("resampled")]
    assert len(resampled) == 6 and all(lay.size == (32, 32) for lay in layouts)
    again = plan_layouts(small_tiles, plan, layout_model=model)
    assert [lay.xy_tile.tolist() for lay in again] == [lay.xy_tile.tolist() for lay in layouts]  # seeded
    with pytest.raises(Exception, match="resampled share"):
        SyntheticPlan(resampled_share=1.5)


def test_benchmark_script_prints_the_three_arms(tmp_path, small_tiles):
    """benchmarks/downstream.py end to end on a tiny trained model and a tiny dataset."""
    from wsi_cosynth.exporters import open_writer
    from wsi_cosynth.models.config import load_config
    from wsi_cosynth.training.dataset import TileDataset
    from wsi_cosynth.training.loop import train

    tax = small_tiles[0].taxonomy
    for split, tiles in (("train", small_tiles[:4]), ("test", small_tiles[4:])):
        with open_writer("lizard", tmp_path / split, tax) as writer:
            for t in tiles:
                writer.add(t)
    config = load_config("tiny").with_overrides(steps=1, checkpoint_every=1, num_threads=1)
    train(config, TileDataset(small_tiles, taxonomy=tax, tile_size=32, tissue="colon"), tmp_path / "run",
          mpp=0.25, progress=False)
    repo = __import__("conftest").REPO
    proc = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "downstream.py"), "--model", str(tmp_path / "run" / "model"),
         "--train", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "--format", "lizard",
         "--steps", "2", "--sample-steps", "2", "--resampled-share", "0", "--threads", "1",
         "--segmenter-widths", "8,16", "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(ARMS) <= set(result)
    for arm in ARMS:
        assert {"dice", "aji", "pq", "f1_classes"} <= set(result[arm])


def test_synthesis_keeps_chunks_and_resumes_at_the_first_missing_one(small_tiles, tmp_path, monkeypatch):
    import shutil

    import wsi_cosynth.api as api
    import wsi_cosynth.evaluation.downstream as downstream
    from wsi_cosynth.models.config import load_config
    from wsi_cosynth.models.cosynth import CosynthModel

    tax = small_tiles[0].taxonomy
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CosynthModel(load_config("tiny"), tax, mpp=0.25).eval()
    monkeypatch.setattr(downstream, "CHUNK_LAYOUTS", 2)
    real = small_tiles[:5]  # 5 layouts: chunks of 2, 2, 1
    plan = SyntheticPlan(ratio=1.0, resampled_share=0.0, per_layout=1, steps=2, guidance=2.0, tissue="colon")
    calls = []
    real_synthesize = api.synthesize
    monkeypatch.setattr(api, "synthesize", lambda layouts, *a, **kw: calls.append(len(layouts)) or real_synthesize(layouts, *a, **kw))
    plain = synthesize_training_tiles(model, real, plan, batch_size=2)
    kept = synthesize_training_tiles(model, real, plan, batch_size=2, chunk_dir=tmp_path / "c")
    assert calls == [2, 2, 1, 2, 2, 1]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["repeat00-chunk0000", "repeat00-chunk0001",
                                                                    "repeat00-chunk0002"]
    shutil.rmtree(tmp_path / "c" / "repeat00-chunk0001")  # the run stopped while making this chunk
    calls.clear()
    resumed = synthesize_training_tiles(model, real, plan, batch_size=2, chunk_dir=tmp_path / "c")
    assert calls == [2]
    for a, b, c in zip(plain, kept, resumed, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.image, c.image)
        assert np.array_equal(a.instances, c.instances) and np.array_equal(a.classes, c.classes)
