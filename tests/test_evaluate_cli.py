"""`wsi-cosynth evaluate` end to end on small real sets, and evaluate_sets from Python."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from wsi_cosynth.cli import main
from wsi_cosynth.errors import CosynthError


@pytest.fixture(scope="module")
def extractor():
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor

    return InceptionFeatureExtractor()


def test_evaluate_consep_vs_nucls_writes_a_complete_report(
    consep_dir: Path, nucls_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from PIL import Image

    out = tmp_path / "report"
    rc = main([
        "evaluate", "--real", str(consep_dir), "--real-format", "consep",
        "--synthetic", str(nucls_dir / "train"), "--synthetic-format", "cellvit",
        "--out", str(out), "--max-images", "8", "--batch-size", "8", "--device", "cpu", "--no-progress",
    ])
    assert rc == 0
    assert "FID" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.json", "report.md", "class_composition.png", "nn_distance_hist.png", "samples.png"]
    )
    assert not list(tmp_path.glob(".*partial*"))
    report = json.loads((out / "report.json").read_text())
    f = report["figures"]
    assert report["inputs"]["real"]["format"] == "consep" and report["inputs"]["synthetic"]["format"] == "cellvit"
    assert report["feature_extractor"]["weights"].endswith("default_1.pt")
    assert f["n_tiles"] == {"real": 8, "synthetic": 8}
    # NuCLS classes joined into CoNSeP's by name: non-tumor -> other, tumor -> epithelial.
    assert f["taxonomy"]["names"] == ["other", "inflammatory", "epithelial", "spindle"]
    syn = f["labels"]["composition"]["synthetic"]["classes"]
    assert syn["inflammatory"]["nuclei"] == 0 and syn["spindle"]["nuclei"] == 0
    assert syn["other"]["nuclei"] > 0 and syn["epithelial"]["nuclei"] > 0
    real = f["labels"]["composition"]["real"]
    assert real["nuclei"] > 100 and real["classes"]["spindle"]["nuclei"] > 0
    # Breast vs colon tissue, different scanners: far apart in every image and label figure.
    assert f["image"]["fid"] > 50
    assert f["image"]["kid"]["mean"] > 0.01
    assert f["image"]["inception_score"] == {"real": None, "synthetic": None}
    assert any("Inception Score not computed" in w for w in f["warnings"])
    assert f["labels"]["fsd"] > 1.0
    assert f["labels"]["fsd_unit_scale"] == pytest.approx(f["labels"]["fsd"] / 1e4)
    assert f["agreement"]["real"]["mean_auc"] > 0.8 and f["agreement"]["synthetic"]["mean_auc"] > 0.8
    assert f["layout"]["distance"]["total"] > 0
    assert f["layout"]["real"]["nn_distance_px_mean"] > 5
    md = (out / "report.md").read_text()
    assert "| FID |" in md and "FSD" in md
    with Image.open(out / "samples.png") as im:
        assert im.size[0] > 8 * 256 and im.size[1] > 2 * 256


def test_evaluate_sets_of_one_set_against_itself_is_zero(consep_dir: Path, extractor) -> None:
    from wsi_cosynth.evaluation import evaluate_sets, summarize_set
    from wsi_cosynth.exporters import read_dataset

    summary = summarize_set(read_dataset(consep_dir, "consep"), extractor, max_images=4, batch_size=4)
    figures = evaluate_sets(summary, summary)
    assert figures["n_tiles"] == {"real": 4, "synthetic": 4}
    assert figures["image"]["fid"] == pytest.approx(0.0, abs=1e-3)
    assert figures["labels"]["fsd"] == pytest.approx(0.0, abs=1e-6)
    assert figures["layout"]["distance"]["total"] == pytest.approx(0.0, abs=1e-9)
    # The unbiased MMD estimator assumes independent samples; the same set twice gives a value <= 0.
    assert figures["image"]["kid"]["mean"] <= 0.0
    json.dumps(figures, allow_nan=False)  # every figure is JSON-ready


def test_evaluate_sets_accepts_plain_tile_iterables(consep_dir: Path, extractor) -> None:
    from wsi_cosynth.evaluation import evaluate_sets
    from wsi_cosynth.exporters import read_dataset

    tiles = list(itertools.islice(read_dataset(consep_dir, "consep"), 4))
    figures = evaluate_sets(tiles[:2], tiles[2:], extractor=extractor, batch_size=4)
    assert figures["n_tiles"] == {"real": 2, "synthetic": 2}
    assert figures["image"]["fid"] > 0 and np.isfinite(figures["image"]["fid"])


def test_too_few_tiles_for_a_covariance_is_a_clear_error(consep_dir: Path, extractor) -> None:
    from wsi_cosynth.evaluation import evaluate_sets
    from wsi_cosynth.exporters import read_dataset

    tiles = list(itertools.islice(read_dataset(consep_dir, "consep"), 3))
    with pytest.raises(CosynthError, match=r"the synthetic set has 1 tile\(s\).*at least 2"):
        evaluate_sets(tiles[:2], tiles[2:], extractor=extractor)


def test_missing_weights_unreadable_input_and_bad_arguments_exit_2(
    consep_dir: Path, nucls_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = ["evaluate", "--real", str(consep_dir), "--real-format", "consep",
            "--synthetic", str(nucls_dir / "train"), "--synthetic-format", "cellvit", "--out", str(tmp_path / "r")]
    assert main(base + ["--weights", str(tmp_path / "missing.pt")]) == 2
    assert "InceptionV3 weights file not found" in capsys.readouterr().err
    assert main(base + ["--max-images", "1"]) == 2
    assert "--max-images must be >= 2" in capsys.readouterr().err

    # A CoNSeP-style set whose second image is not an image.
    bad = tmp_path / "bad"
    for sub in ("images", "inst", "type_mat"):
        (bad / sub).mkdir(parents=True)
    for stem in ("train_1_000", "train_1_001", "train_1_002"):
        shutil.copy(consep_dir / "images" / f"{stem}.jpg", bad / "images")
        shutil.copy(consep_dir / "inst" / f"{stem}.npy", bad / "inst")
        shutil.copy(consep_dir / "type_mat" / f"{stem}.mat", bad / "type_mat")
    (bad / "images" / "train_1_001.jpg").write_bytes(b"not a jpeg")
    rc = main(["evaluate", "--real", str(consep_dir), "--real-format", "consep", "--synthetic", str(bad),
               "--synthetic-format", "consep", "--out", str(tmp_path / "r"), "--max-images", "4", "--quiet"])
    assert rc == 2
    assert "train_1_001.jpg cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(base[:-1] + [str(tmp_path / "r"), "--synthetic", str(tmp_path / "nowhere")]) == 2
    assert "--synthetic dataset not found" in capsys.readouterr().err
