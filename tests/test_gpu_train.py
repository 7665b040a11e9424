"""The prepared GPU run, checked on the CPU: tile pack round trip, batches built on the device
(same views as TileDataset), the loop's wall-time budget, and scripts/gpu_train.py end to end
with the tiny config (its outputs load and sample)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_cosynth.models.config import load_config
from wsi_cosynth.records import LabelledTile, Provenance
from wsi_cosynth.taxonomy import get_taxonomy
from wsi_cosynth.training.dataset import TileDataset, d4
from wsi_cosynth.training.device_data import DeviceTileDataset
from wsi_cosynth.training.loop import latest_checkpoint, train

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from pack_training_data import read_pack, write_pack  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _generated_tiles(n_sources: int = 3, per_source: int = 2, size: int = 64, seed: int = 0) -> list[LabelledTile]:
    """Small labelled tiles: pinkish noise with dark discs as nuclei of random classes."""
    rng = np.random.default_rng(seed)
    taxonomy = get_taxonomy("consep")
    yy, xx = np.mgrid[:size, :size]
    tiles = []
    for s in range(n_sources):
        for k in range(per_source):
            image = np.clip(rng.normal([220, 170, 200], 12, (size, size, 3)), 0, 255).astype(np.uint8)
            inst = np.zeros((size, size), np.int32)
            for i in range(int(rng.integers(3, 8))):
                cy, cx, r = rng.integers(6, size - 6), rng.integers(6, size - 6), rng.integers(3, 6)
                disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (inst == 0)
                if disc.any():
                    inst[disc] = inst.max() + 1
            image[inst > 0] = (90, 40, 120)
            classes = rng.integers(1, taxonomy.n_classes + 1, int(inst.max()))
            tiles.append(LabelledTile(image=image, instances=inst, classes=classes, taxonomy=taxonomy,
                                      provenance=Provenance(name=f"gen{s}_{k:03d}", mpp=0.25)))
    return tiles


def test_pack_round_trip_is_lossless(tmp_path):
    tiles = _generated_tiles()
    meta = write_pack(tiles, tmp_path / "p.npz", meta={"holdout_images": ["gen2"], "tissue": "colon", "mpp": 0.25})
    assert meta["image_codecs"] == {"png": len(tiles)}
    back, meta2 = read_pack(tmp_path / "p.npz")
    assert meta2["holdout_images"] == ["gen2"] and meta2["pixel_mismatches"] == 0
    for a, b in zip(tiles, back):
        assert a.provenance.name == b.provenance.name and b.provenance.mpp == 0.25
        assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
        assert b.instances.dtype == np.int32 and np.array_equal(a.classes, b.classes)
        assert b.taxonomy.names == a.taxonomy.names


def test_pack_keeps_real_jpeg_bytes(tmp_path):
    from conftest import data_path

    from wsi_cosynth.exporters import read_dataset

    root = data_path("consep", "train")
    tiles = [t for _, t in zip(range(3), read_dataset(root, "consep"))]
    meta = write_pack(tiles, tmp_path / "p.npz", meta={})
    assert meta["image_codecs"] == {"jpeg": 3}  # the files' own bytes: lossless and small
    back, meta2 = read_pack(tmp_path / "p.npz")
    assert meta2["pixel_mismatches"] == 0
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances) for a, b in zip(tiles, back))


def test_device_batches_are_tile_dataset_views():
    tiles = _generated_tiles()
    ds = TileDataset(tiles, taxonomy=tiles[0].taxonomy, tile_size=32, tissue="colon", text_drop_prob=0.5)
    dev = DeviceTileDataset(ds, "cpu")
    rng = np.random.default_rng(1)
    idx, r0, c0, k = (rng.integers(0, len(tiles), 16), rng.integers(0, 33, 16), rng.integers(0, 33, 16),
                      rng.integers(0, 8, 16))
    k[:8] = np.arange(8)  # every symmetry
    views = dev.views(idx, r0, c0, k)
    for j in range(16):
        t = ds.tiles[idx[j]]
        for a, v in zip((t.image, t.semantic, t.distance, t.points), views):
            assert np.array_equal(d4(a[r0[j]:r0[j] + 32, c0[j]:c0[j] + 32], k[j]), v[j].numpy().astype(a.dtype))
    batch = dev.batch(64, np.random.default_rng(2))
    ref = ds.batch(64, np.random.default_rng(2))
    for x, y in ((batch.x0.image, ref.x0.image), (batch.x0.distance, ref.x0.distance),
                 (batch.x0.label, ref.x0.label), (batch.points, ref.points), (batch.keep_text, ref.keep_text)):
        assert x.shape == y.shape and x.dtype == y.dtype
    assert batch.x0.image.min() >= -1 and batch.x0.image.max() <= 1 and 0 < batch.keep_text.sum() < 64
    # each prompt names exactly the classes whose points lie in its crop
    for p, pts in zip(batch.prompts, batch.points):
        names = {ds.taxonomy.name_of(int(c)) for c in torch.unique(pts) if c > 0}
        assert all(n in p for n in names) and ("with no nucleus" in p) == (not names)


def test_wall_time_budget_stops_training_with_a_checkpoint(tmp_path):
    tiles = _generated_tiles()
    config = load_config("tiny").with_overrides(steps=10**6, checkpoint_every=10**6, log_every=10**6, num_threads=1)
    ds = DeviceTileDataset(TileDataset(tiles, taxonomy=tiles[0].taxonomy, tile_size=32, tissue="colon"), "cpu")
    t = time.perf_counter()
    train(config, ds, tmp_path / "run", mpp=0.25, progress=False, wall_seconds=1.0, checkpoint_seconds=0.5)
    assert time.perf_counter() - t < 30
    ckpt = latest_checkpoint(tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert ckpt is not None and len(records) == 1 and 0 < records[0]["step"] < 10**6
    assert ckpt.name == f"step-{records[0]['step']:07d}"
    assert json.loads((tmp_path / "run" / "model" / "model.json").read_text())["steps"] == records[0]["step"]


def _dry_run(tmp_path: Path, stages: str) -> tuple[dict, Path, list[LabelledTile]]:
    """scripts/gpu_train.py as the GPU machine runs it (stages in child processes), on the CPU."""
    tiles = _generated_tiles()
    write_pack(tiles, tmp_path / "pack.npz", meta={"holdout_images": ["gen2"], "tissue": "colon", "mpp": 0.25})
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "scripts" / "gpu_train.py"), "--dry-run", "--pack", str(tmp_path / "pack.npz"),
           "--out", str(out), "--work", str(tmp_path / "work"), "--stages", stages, "--wall-seconds", "2",
           "--checkpoint-seconds", "1", "--bench-models", "tiny", "--bench-batches", "1,2", "--export-max-tiles", "1",
           "--export-batch-size", "1", "--demo", str(tmp_path / "demo")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert {k: v["status"] for k, v in report["stages"].items()} == {s: "ok" for s in stages.split(",")}
    return report, out, tiles


@pytest.mark.slow
def test_gpu_train_script_all_stages(tmp_path):
    """All three stages, the demo-slide export included (about 45 s here)."""
    report, out, _ = _dry_run(tmp_path, "train,bench,export")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["export-preview.png", "log.txt", "loss.jsonl", "model/model.json", "model/model.safetensors",
                     "report.json", "validation.jsonl"]
    assert report["stages"]["export"]["result"]["tiles"] == 1


def test_gpu_train_script_dry_run(tmp_path):
    """Train + bench; what comes back loads and samples."""
    import wsi_cosynth as wc
    from wsi_cosynth.layouts import layout_from_tile

    report, out, tiles = _dry_run(tmp_path, "train,bench")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["log.txt", "loss.jsonl", "model/model.json", "model/model.safetensors", "report.json",
                     "validation.jsonl"]
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.rglob("*") if p.is_file())
    train_result = report["stages"]["train"]["result"]
    assert train_result["held_out_tiles"] == 2 and train_result["steps"] >= 1
    assert report["stages"]["train"]["bundle"]["steps"] == train_result["steps"]
    runs = report["stages"]["bench"]["result"]["runs"]
    assert [(r["model"], r["batch"]) for r in runs] == [("tiny", 1), ("tiny", 2), ("trained", 1), ("trained", 2)]
    assert all(r["network_tiles_per_s"] > 0 for r in runs)
    # the fp16 EMA weights that come back load with the public API and sample a tile
    model = wc.load_model(out / "model")
    assert next(model.parameters()).dtype == torch.float32 and model.tile_size == 32
    sample = wc.synthesize([layout_from_tile(_crop(tiles[0], 32))], model, steps=2, seed=0)[0]
    assert sample.image.shape == (32, 32, 3) and sample.image.dtype == np.uint8


def _crop(tile: LabelledTile, size: int) -> LabelledTile:
    from wsi_cosynth.records import relabel_contiguous

    inst = tile.instances[:size, :size]
    ids = np.unique(inst)
    ids = ids[ids > 0]
    new, classes = relabel_contiguous(inst, {int(i): int(tile.classes[i - 1]) for i in ids})
    return LabelledTile(image=tile.image[:size, :size], instances=new, classes=classes, taxonomy=tile.taxonomy,
                        provenance=tile.provenance)
