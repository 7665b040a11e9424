"""End to end: `wsi-cosynth export --source synthetic` with a tiny model on a generated slide."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from consumer_checks import check_coco, check_lizard, check_pannuke, check_qupath_geojson
from slide_fixtures import synthetic_he, write_svs
from wsi_cosynth.cli import main
from wsi_cosynth.exporters import read_dataset
from wsi_cosynth.models.config import load_config
from wsi_cosynth.models.cosynth import CosynthModel
from wsi_cosynth.taxonomy import get_taxonomy
from wsi_cosynth.training.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained tiny-config model (32 px tiles at 0.5 um/px, CoNSeP classes)."""
    torch.manual_seed(0)
    model = CosynthModel(load_config("tiny"), get_taxonomy("consep"), mpp=0.5, tile_size=32)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny", model, steps=0)


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    """A 384 x 384 px slide at 0.25 um/px: glass on the left, tissue on the right."""
    path = tmp_path_factory.mktemp("slide") / "gen.svs"
    return write_svs(path, synthetic_he(384, 384, seed=1, tissue_fraction=0.6), mpp=0.25)


@pytest.fixture(scope="module")
def annotated_slide(tmp_path_factory, slide: Path) -> Path:
    """The same slide with a QuPath GeoJSON sidecar of square 'tumor'/'lymphocyte' nuclei."""
    folder = tmp_path_factory.mktemp("annotated")
    target = folder / "ann.svs"
    target.write_bytes(slide.read_bytes())
    rng = np.random.default_rng(3)
    features = []
    for i in range(60):
        x, y = rng.uniform(170, 370), rng.uniform(10, 370)
        ring = [[x, y], [x + 6, y], [x + 6, y + 6], [x, y + 6], [x, y]]
        name = "Tumor" if i % 3 else "Lymphocyte"
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"objectType": "detection",
                                        "classification": {"name": name, "color": [255, 0, 0]}}})
    (folder / "ann.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return target


def _export(slide: Path, out: Path, model: Path, *extra: str) -> int:
    return main(["export", "--slide", str(slide), "--out", str(out), "--model", str(model), "--steps", "4",
                 "--max-tiles", "4", "--batch-size", "2", "--seed", "7", "--no-progress", "--threads", "1", *extra])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["coco", "lizard", "pannuke", "geojson"])
def test_every_format_passes_its_consumer_checks(fmt, slide, tiny_model, tmp_path):
    out = tmp_path / fmt
    assert _export(slide, out, tiny_model, "--format", fmt, "--tissue", "colon") == 0
    assert (out / "preview.png").is_file()
    tiles = list(read_dataset(out, fmt))
    assert len(tiles) == 4 and all(t.size == (32, 32) for t in tiles)
    if fmt == "coco":
        check_coco(out)
    elif fmt == "lizard":
        check_lizard(out)
    elif fmt == "pannuke":
        check_pannuke(out)
    else:
        for path in out.rglob("*.geojson"):
            check_qupath_geojson(path)


def test_same_seed_same_files_and_other_seed_differs(slide, tiny_model, tmp_path):
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert main(["export", "--slide", str(slide), "--out", str(tmp_path / name), "--model", str(tiny_model),
                     "--format", "coco", "--steps", "3", "--max-tiles", "3", "--seed", seed, "--no-progress",
                     "--threads", "1"]) == 0
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a["annotations.json"] != c["annotations.json"] or any(a[k] != c[k] for k in a if k.endswith(".png"))


def test_annotated_slide_layouts_and_geojson_in_slide_coordinates(annotated_slide, tiny_model, tmp_path):
    out = tmp_path / "geo"
    assert _export(annotated_slide, out, tiny_model, "--format", "geojson", "--per-layout", "2") == 0
    tiles = list(read_dataset(out, "geojson"))
    assert len(tiles) == 8  # 4 layouts x 2 samples
    for tile in tiles:
        assert tile.placement is not None
        # The tile stands for its slide region: 32 px at 0.5 um/px = 64 level-0 px of a 0.25 um/px slide.
        assert tile.placement.scale == pytest.approx(2.0)
        assert tile.provenance.x_slide == tile.placement.x0
    # The slide file holds every tile's nuclei in level-0 pixels, inside the tiles laid over the
    # tissue (glass ends at x = 154, so the first tissue tile spans x = 128..192).
    features = json.loads((out / "ann.geojson").read_text())["features"]
    assert len(features) == sum(t.n_nuclei for t in tiles) > 0
    for feature in features:
        xs = np.array(feature["geometry"]["coordinates"][0])[:, 0]
        assert 128 <= xs.min() and xs.max() <= 384


def test_two_dask_workers_give_the_same_files_as_in_process(slide, tiny_model, tmp_path):
    args = ("--format", "coco", "--tissue", "colon")
    assert _export(slide, tmp_path / "local", tiny_model, *args) == 0
    assert _export(slide, tmp_path / "dask", tiny_model, *args, "--workers", "2") == 0
    assert _files(tmp_path / "local") == _files(tmp_path / "dask")


def test_killed_run_resumes_to_the_same_files(slide, tiny_model, tmp_path):
    common = ["--format", "lizard", "--tissue", "colon", "--steps", "40", "--batch-size", "1", "--max-tiles", "6",
              "--seed", "3", "--no-progress", "--threads", "1"]
    full = tmp_path / "full"
    assert main(["export", "--slide", str(slide), "--out", str(full), "--model", str(tiny_model), *common]) == 0

    out = tmp_path / "resumed"
    work = tmp_path / ".resumed.cosynth-work"
    cmd = [sys.executable, "-m", "wsi_cosynth", "export", "--slide", str(slide), "--out", str(out),
           "--model", str(tiny_model), *common]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(work.glob("batch_*.npz")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(work.glob("batch_*.npz")))
    assert proc.returncode == -signal.SIGKILL and 1 <= done_before < 6, "the run was not interrupted midway"
    assert not out.exists()  # nothing half-written
    assert main(["export", "--slide", str(slide), "--out", str(out), "--model", str(tiny_model), *common]) == 0
    assert _files(out) == _files(full)
    assert not work.exists()


def test_clear_errors(slide, tiny_model, tmp_path, capsys):
    blank = write_svs(tmp_path / "blank.svs", np.full((256, 256, 3), 245, np.uint8), mpp=0.25)
    assert _export(blank, tmp_path / "o1", tiny_model, "--format", "coco") == 2
    assert "no tissue" in capsys.readouterr().err
    pannuke_model = CosynthModel(load_config("tiny"), get_taxonomy("pannuke"), mpp=0.5, tile_size=32)
    ckpt = save_checkpoint(tmp_path / "pannuke_model", pannuke_model, steps=0)
    (tmp_path / "map.yaml").write_text("other: nonexistent\n")
    assert _export(slide, tmp_path / "o2", ckpt, "--format", "coco", "--layouts", "resample") == 2
    assert "'other'" in capsys.readouterr().err  # consep 'other' has no pannuke counterpart
    assert _export(slide, tmp_path / "o3", tiny_model, "--format", "coco", "--model", str(tmp_path / "nope")) == 2
    assert "not found" in capsys.readouterr().err
    assert _export(slide, tmp_path / "o4", tiny_model, "--format", "coco", "--steps", "2000") == 2
    assert "1000 diffusion steps" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert _export(slide, tmp_path / "o5", tiny_model, "--format", "coco", "--device", "cuda") == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert not any((tmp_path / f"o{k}").exists() for k in range(1, 6))
    assert not list(tmp_path.glob(".o*"))  # no work directory left behind either


def test_gpu_assignment_spreads_local_workers_and_is_stable_for_named_ones():
    from wsi_cosynth.pipeline.worker import gpu_index_for_worker

    assert [gpu_index_for_worker(k, 2) for k in range(4)] == [0, 1, 0, 1]
    assert [gpu_index_for_worker(str(k), 3) for k in range(3)] == [0, 1, 2]
    code = "from wsi_cosynth.pipeline.worker import gpu_index_for_worker as g; print(g('tcp://10.0.0.7:4312', 8))"
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(seen) == 1
