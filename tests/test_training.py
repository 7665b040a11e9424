"""Training dataset, loop, checkpoints (round trip, mismatch errors, resume) and the train CLI."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_cosynth.errors import CosynthError
from wsi_cosynth.exporters import read_dataset
from wsi_cosynth.models.config import load_config
from wsi_cosynth.taxonomy import get_taxonomy
from wsi_cosynth.training.checkpoint import load_model
from wsi_cosynth.training.dataset import TileDataset, d4, source_image_of
from wsi_cosynth.training.loop import latest_checkpoint, train


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiles():
    from conftest import data_path

    root = data_path("consep", "train")
    return list(itertools.islice(read_dataset(root, "consep"), 3))


def _tiny(**train):
    return load_config("tiny").with_overrides(**{"checkpoint_every": 2, "log_every": 1, "num_threads": 1, **train})


def _dataset(tiles, size=32, **kw):
    return TileDataset(tiles, taxonomy=tiles[0].taxonomy, tile_size=size, tissue="colon", **kw)


def test_source_image_and_d4():
    assert source_image_of("train_10_003") == "train_10" and source_image_of("slideA") == "slideA"
    a = np.arange(12).reshape(3, 4)
    views = {d4(a, k).tobytes() + bytes(d4(a, k).shape) for k in range(8)}
    assert len(views) == 8  # eight distinct symmetries
    assert np.array_equal(d4(a, 1), np.rot90(a)) and np.array_equal(d4(a, 4), a[:, ::-1])


def test_dataset_examples_keep_maps_aligned(tiles):
    ds = _dataset(tiles, size=64, text_drop_prob=0.3)
    rng = np.random.default_rng(0)
    batch = ds.batch(64, rng)
    assert batch.x0.image.shape == (64, 3, 64, 64) and batch.x0.label.shape == (64, 64, 64)
    assert batch.x0.image.min() >= -1 and batch.x0.image.max() <= 1
    assert batch.x0.distance.min() >= -1 and batch.x0.distance.max() <= 1
    # point pixels sit on nuclei of their class (checks crop + flip are applied to every map alike)
    pts, lab = batch.points, batch.x0.label
    on = pts > 0
    assert on.sum() > 50
    assert (lab[on] == pts[on]).float().mean() > 0.9
    # the distance map is 0 off nuclei
    assert torch.all(batch.x0.distance[:, 0][lab == 0] == -1)
    # prompts name the tissue and exactly the classes whose points are in the crop
    for i, p in enumerate(batch.prompts):
        present = {ds.taxonomy.name_of(int(c)) for c in torch.unique(pts[i]) if c > 0}
        assert "colon" in p
        named = set(p.split("of ")[1].split(", ")) if present else set()
        assert named == present
    kept = batch.keep_text.float().mean().item()
    assert 0.5 < kept < 0.9  # ~70% kept at drop prob 0.3


def test_checkpoint_round_trip_and_sampling(tiles, tmp_path):
    model = train(_tiny(steps=2), _dataset(tiles), tmp_path / "run", mpp=0.25, progress=False)
    loaded = load_model(tmp_path / "run" / "model")
    assert loaded.taxonomy == tiles[0].taxonomy and loaded.mpp == 0.25 and loaded.tile_size == 32
    assert loaded.config == model.config and loaded.text_encoder_id == "learned"
    for k, v in model.state_dict().items():
        assert torch.allclose(v.float(), loaded.state_dict()[k].float()), k  # EMA weights
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["steps"] == 2 and meta["data"]["n_tiles"] == 3 and meta["taxonomy"]["key"] == "consep"
    log = [json.loads(line) for line in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(r["total"]) for r in log)


def test_validation_loss_is_reproducible_and_falls_with_training(tiles, tmp_path):
    from wsi_cosynth.training.validation import validation_losses

    held = _dataset(tiles[:1], augment=False, text_drop_prob=0.0)
    model = train(_tiny(steps=1), _dataset(tiles[1:]), tmp_path / "a", mpp=0.25, progress=False)
    first = validation_losses(model, held, n_examples=8, batch_size=4)
    assert first == validation_losses(model, held, n_examples=8, batch_size=4)  # same examples every call
    assert first != validation_losses(model, held, n_examples=8, batch_size=4, seed=1)
    assert set(first) >= {"image", "distance", "label", "total"} and all(np.isfinite(v) for v in first.values())

    run = tmp_path / "b"
    train(_tiny(steps=40, checkpoint_every=20, ema_decay=0.5, validation_examples=8), _dataset(tiles[1:]), run,
          mpp=0.25, progress=False, validation=held)
    log = [json.loads(line) for line in (run / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [20, 40]
    assert log[-1]["total"] < first["total"]  # 40 steps from the same init help on the held-out tile
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["data"]["validation"]["step"] == 40 and meta["data"]["validation"]["total"] == log[-1]["total"]


def _edit_meta(directory: Path, fn) -> None:
    p = directory / "model.json"
    meta = json.loads(p.read_text())
    fn(meta)
    p.write_text(json.dumps(meta))


def test_checkpoint_mismatches_are_clear_errors(tiles, tmp_path):
    train(_tiny(steps=1), _dataset(tiles), tmp_path / "run", mpp=0.25, progress=False)
    src = tmp_path / "run" / "model"

    def variant(name):
        d = tmp_path / name
        shutil.copytree(src, d)
        return d

    d = variant("classes")
    _edit_meta(d, lambda m: m["taxonomy"].update(names=["a", "b", "c", "d", "e"], colors=[[0, 0, 0]] * 5))
    with pytest.raises(CosynthError, match=r"model.safetensors.*5 classes"):
        load_model(d)
    d = variant("text")
    _edit_meta(d, lambda m: (m["config"]["model"]["text"].update(kind="minilm"), m.update(text_encoder="minilm:all-MiniLM-L6-v2")))
    with pytest.raises(CosynthError, match=r"model.safetensors.*text encoder"):
        load_model(d)
    d = variant("textid")
    _edit_meta(d, lambda m: m.update(text_encoder="clip:plip"))
    with pytest.raises(CosynthError, match=r"model.json.*text encoder"):
        load_model(d)
    with pytest.raises(CosynthError, match="requested"):
        load_model(src, expect_taxonomy=get_taxonomy("pannuke"))
    with pytest.raises(CosynthError, match="requested"):
        load_model(src, expect_text_encoder="minilm:all-MiniLM-L6-v2")
    d = variant("corrupt")
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CosynthError, match=r"corrupt.*|unreadable"):
        load_model(d)
    d = variant("badjson")
    (d / "model.json").write_text("{")
    with pytest.raises(CosynthError, match="model.json"):
        load_model(d)
    d = variant("missing")
    (d / "model.safetensors").unlink()
    with pytest.raises(CosynthError, match="model.safetensors"):
        load_model(d)


def test_resume_continues_exactly(tiles, tmp_path):
    def config(steps):  # with dropout, whose masks come from torch's global RNG
        tiny = _tiny(steps=steps)
        return tiny.model_copy(update={"model": tiny.model.model_copy(update={"dropout": 0.3})})

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    full = train(config(4), _dataset(tiles), tmp_path / "full", mpp=0.25, progress=False)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's global RNG stream is untouched
    train(config(2), _dataset(tiles), tmp_path / "part", mpp=0.25, progress=False)
    assert latest_checkpoint(tmp_path / "part").name == "step-0000002"
    with pytest.raises(CosynthError, match="--resume"):
        train(config(4), _dataset(tiles), tmp_path / "part", mpp=0.25, progress=False)
    with pytest.raises(CosynthError, match="0.25 um/px.*0.5"):
        train(config(4), _dataset(tiles), tmp_path / "part", mpp=0.5, resume=True, progress=False)
    with (tmp_path / "part" / "loss.jsonl").open("a") as fh:  # a record from after the checkpoint (a crash)
        fh.write(json.dumps({"step": 3, "total": 0.0}) + "\n")
    torch.manual_seed(999)  # the resumed run must not depend on the caller's RNG state
    resumed = train(config(4), _dataset(tiles), tmp_path / "part", mpp=0.25, resume=True, progress=False)
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "loss.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_bad_training_options_are_clear_errors():
    with pytest.raises(CosynthError, match="invalid training option.*steps"):
        load_config("tiny").with_overrides(steps=0)


def test_train_cli(tmp_path):
    from conftest import data_path

    from wsi_cosynth.cli import main

    root = data_path("consep", "train")
    data = tmp_path / "data"
    for sub in ("images", "inst", "type_mat"):
        (data / sub).mkdir(parents=True)
    for stem in ("train_1_000", "train_1_001", "train_2_000"):
        for sub, ext in (("images", "jpg"), ("inst", "npy"), ("type_mat", "mat")):
            shutil.copy(root / sub / f"{stem}.{ext}", data / sub / f"{stem}.{ext}")
    out = tmp_path / "run"
    args = ["train", "--config", "tiny", "--data", str(data), "--format", "consep", "--tissue", "colon",
            "--out", str(out), "--steps", "2", "--mpp", "0.25", "--threads", "1", "--holdout-images", "train_2", "--no-progress"]
    assert main(args) == 0
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["data"]["holdout_images"] == ["train_2"] and meta["data"]["n_tiles"] == 2 and meta["mpp"] == 0.25
    assert main(args[:-5] + ["--holdout-images", "train_9", "--no-progress"]) == 2  # unknown held-out image
    assert main(args + ["--resume", "--steps", "3"]) == 0
    assert json.loads((out / "model" / "model.json").read_text())["steps"] == 3


def _annotated_slide(folder: Path, stem: str) -> Path:
    """A 384 px generated slide (0.25 um/px, tissue on the right) with a GeoJSON sidecar of square nuclei."""
    from slide_fixtures import synthetic_he, write_svs

    folder.mkdir(parents=True, exist_ok=True)
    slide = write_svs(folder / f"{stem}.svs", synthetic_he(384, 384, seed=1, tissue_fraction=0.6), mpp=0.25)
    rng = np.random.default_rng(5)
    features = []
    for i in range(40):
        x, y = rng.uniform(250, 370), rng.uniform(10, 370)  # only part of the tissue is annotated
        ring = [[x, y], [x + 8, y], [x + 8, y + 8], [x, y + 8], [x, y]]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"objectType": "detection",
                                        "classification": {"name": "Epithelial" if i % 2 else "Lymphocyte"}}})
    (folder / f"{stem}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return slide


def test_train_cli_on_annotated_slides(tmp_path, capsys):
    from wsi_cosynth.cli import main
    from wsi_cosynth.training.sources import tiles_from_slides

    a, b = _annotated_slide(tmp_path, "slide-a"), _annotated_slide(tmp_path, "slide-b")
    source = tiles_from_slides([a], mpp=0.5, tile_size=32)
    assert {"lymphocyte", "epithelial"} <= {n.lower() for n in source.taxonomy.names}
    assert all(t.n_nuclei >= 1 and t.image.shape == (32, 32, 3) for t in source.tiles)
    (per_slide,) = source.summary["slides"]
    assert per_slide["tiles"] == len(source.tiles) and per_slide["skipped_tiles_with_few_nuclei"] > 0
    assert tiles_from_slides([a], mpp=0.5, tile_size=32, min_nuclei=0).summary["slides"][0]["tiles"] == \
        per_slide["tiles"] + per_slide["skipped_tiles_with_few_nuclei"]

    out = tmp_path / "run"
    args = ["train", "--config", "tiny", "--slide", str(a), "--slide", str(b), "--holdout-images", "slide-b",
            "--tissue", "colon", "--out", str(out), "--steps", "2", "--threads", "1", "--no-progress"]
    assert main(args) == 0
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["mpp"] == 0.5 and meta["data"]["holdout_images"] == ["slide_b"]
    assert meta["data"]["n_tiles"] == len(source.tiles) and meta["data"]["format"] == "slides"
    load_model(out / "model")

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(a, bare / "c.svs")
    capsys.readouterr()
    assert main(["train", "--config", "tiny", "--slide", str(bare / "c.svs"), "--out", str(tmp_path / "r2"),
                 "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "c.svs" in err and "no nuclei annotations" in err and "Traceback" not in err
    assert not (tmp_path / "r2").exists()


def test_a_checkpoint_from_before_an_option_existed_still_resumes(tiles, tmp_path):
    """Its config lacks the new key (the default then applies); a real difference still refuses."""
    train(_tiny(steps=2), _dataset(tiles), tmp_path / "run", mpp=0.25, progress=False)
    meta_path = latest_checkpoint(tmp_path / "run") / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["model"]["full_res_channels"], meta["config"]["diffusion"]["min_snr_gamma"]
    meta_path.write_text(json.dumps(meta))
    resumed = train(_tiny(steps=3), _dataset(tiles), tmp_path / "run", mpp=0.25, resume=True, progress=False)
    assert json.loads((tmp_path / "run" / "model" / "model.json").read_text())["steps"] == 3
    assert resumed.config.model.full_res_channels == 0
    wider = _tiny(steps=4)
    wider = wider.model_copy(update={"model": wider.model.model_copy(update={"channels": 24})})
    with pytest.raises(CosynthError, match="config differs"):
        train(wider, _dataset(tiles), tmp_path / "run", mpp=0.25, resume=True, progress=False)
