"""Cohort export (`wsi-cosynth export --cohort`): the CSV, patient-level splits, real MoNuSeg
images, bad slides, every format, resume after a kill, and sampling that does not depend on the
thread count."""

from __future__ import annotations

import contextlib
import csv
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
from conftest import data_path
from consumer_checks import check_coco, check_hovernet_mat, check_lizard, check_pannuke, check_qupath_geojson
from slide_fixtures import synthetic_he, write_svs

import wsi_cosynth as wc
from wsi_cosynth.cli import main
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.exporters import read_dataset
from wsi_cosynth.models.config import load_config
from wsi_cosynth.models.cosynth import CosynthModel
from wsi_cosynth.pipeline import export_real
from wsi_cosynth.pipeline.cohort_csv import read_cohort_csv
from wsi_cosynth.pipeline.splits import SPLITS, PatientInfo, assign_splits, parse_fractions
from wsi_cosynth.taxonomy import get_taxonomy
from wsi_cosynth.training.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::wsi_cosynth.annotations.AnnotationWarning")


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_cohort(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        out.writerows(rows)
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained tiny-config model: 32 px tiles at 0.5 um/px, CoNSeP classes."""
    torch.manual_seed(0)
    model = CosynthModel(load_config("tiny"), get_taxonomy("consep"), mpp=0.5, tile_size=32)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny", model, steps=0)


def _square_nuclei(rng: np.random.Generator, n: int, x0: float, x1: float, size: float) -> list[dict]:
    feats = []
    for i in range(n):
        x, y = rng.uniform(x0, x1 - 8), rng.uniform(4, size - 12)
        ring = [[x, y], [x + 7, y], [x + 7, y + 7], [x, y + 7], [x, y]]
        name = "Tumor" if i % 3 else "Lymphocyte"
        feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": {"objectType": "detection", "classification": {"name": name}}})
    return feats


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A folder of generated slides (384 px at 0.25 um/px, tissue on the right 70%), each with a
    QuPath GeoJSON sidecar of 'Tumor'/'Lymphocyte' nuclei: a0..a3."""
    root = tmp_path_factory.mktemp("study")
    (root / "slides").mkdir()
    for i in range(4):
        slide = write_svs(root / "slides" / f"a{i}.svs", synthetic_he(384, 384, seed=10 + i, tissue_fraction=0.7),
                          mpp=0.25, downsamples=(1,))
        feats = _square_nuclei(np.random.default_rng(i), 40, 120, 384, 384)
        slide.with_suffix(".geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return root


# ----------------------------------------------------------------------------------------- CSV
def test_csv_paths_are_relative_to_its_folder_with_defaults(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write_cohort(tmp_path / "sub" / "c.csv", [" Slide ", "Patient", "tissue", "slide_mpp", "split", "Notes"], [
        ["imgs/x.svs", "", "colon", "0.25", "Test", "a note"],
        ["/abs/y.tif", "P7", "", "", "", ""],
    ])
    cohort = read_cohort_csv(path)
    a, b = cohort.rows
    assert a.slide_path == tmp_path / "sub" / "imgs" / "x.svs" and a.annotations_path is None
    assert (a.patient, a.tissue, a.slide_mpp, a.split, a.line) == ("x", "colon", 0.25, "test", 2)
    assert b.slide_path == Path("/abs/y.tif") and (b.patient, b.tissue, b.slide_mpp, b.split) == ("P7", None, None, None)
    assert cohort.ignored_columns == ("notes",)


@pytest.mark.parametrize("rows, needle", [
    ([["patient"], ["p1"]], "no 'slide' column"),
    ([["slide", "patient"], ["a.svs", "p"], ["", "q"]], "line 3: the 'slide' cell is empty"),
    ([["slide"], ["a.svs"], ["./a.svs"]], "line 3: slide './a.svs' is already listed on line 2"),
    ([["slide", "slide_mpp"], ["a.svs", "-1"]], "line 2: slide_mpp '-1'"),
    ([["slide", "slide_mpp"], ["a.svs", "nan"]], "slide_mpp 'nan'"),
    ([["slide", "split"], ["a.svs", "validation"]], "split 'validation' is not one of train, val, test"),
    ([["slide", "patient", "split"], ["a.svs", "p", "train"], ["b.svs", "p", "test"]],
     "patient 'p' is given split 'test' here and 'train' on line 2"),
    ([["slide"]], "lists no slides"),
    ([], "is empty"),
])
def test_csv_errors_name_the_file_and_the_line(tmp_path, rows, needle):
    path = tmp_path / "cohort.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(CosynthError, match="cohort CSV") as err:
        read_cohort_csv(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_csv_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("slide\nna\xefve.svs\n".encode("latin-1"))
    with pytest.raises(CosynthError, match="not UTF-8"):
        read_cohort_csv(path)


# ----------------------------------------------------------------------------------------- splits
def _random_patients(rng: np.random.Generator, n: int, tissues: list[str], p_fixed: float = 0.0) -> dict[str, PatientInfo]:
    return {f"p{i:03d}": PatientInfo(stratum=str(rng.choice(tissues)),
                                     fixed=str(rng.choice(SPLITS)) if rng.random() < p_fixed else None)
            for i in range(n)}


def test_splits_are_seeded_stratified_and_fixed_assignments_win():
    rng = np.random.default_rng(0)
    patients = _random_patients(rng, 120, ["lung", "breast", "colon"], p_fixed=0.1)
    a = assign_splits(patients, (0.8, 0.1, 0.1), seed=3)
    assert a == assign_splits(dict(reversed(list(patients.items()))), (0.8, 0.1, 0.1), seed=3)  # order-free
    assert a != assign_splits(patients, (0.8, 0.1, 0.1), seed=4)
    assert set(a) == set(patients) and set(a.values()) == set(SPLITS)
    assert all(a[p] == info.fixed for p, info in patients.items() if info.fixed)
    counts = {s: sum(v == s for v in a.values()) for s in SPLITS}
    assert abs(counts["train"] - 96) <= 1 and abs(counts["val"] - 12) <= 1 and abs(counts["test"] - 12) <= 1
    for tissue in ("lung", "breast", "colon"):
        members = [p for p, info in patients.items() if info.stratum == tissue]
        share = sum(a[p] == "train" for p in members) / len(members)
        assert abs(share - 0.8) < 0.1, (tissue, share)  # each tissue gets its share, not just the total


def test_small_strata_still_fill_every_split_and_zero_fractions_stay_empty():
    patients = {f"p{i}": PatientInfo(stratum=f"organ{i // 2}") for i in range(14)}  # 7 organs x 2
    a = assign_splits(patients, (0.8, 0.1, 0.1), seed=0)
    assert {s: list(a.values()).count(s) for s in SPLITS} in ({"train": 12, "val": 1, "test": 1},
                                                               {"train": 11, "val": 2, "test": 1},
                                                               {"train": 11, "val": 1, "test": 2})
    # Every organ with 2 patients keeps one in train (floor(0.8 x 2) = 1).
    assert all(any(a[p] == "train" for p in patients if patients[p].stratum == f"organ{k}") for k in range(7))
    b = assign_splits(patients, (0.5, 0.5, 0.0), seed=0)
    assert "test" not in b.values() and list(b.values()).count("train") == 7


@pytest.mark.parametrize("text", ["0.8,0.1", "0.8,0.1,0.2", "a,b,c", "-0.1,0.6,0.5", "nan,0.5,0.5"])
def test_split_fractions_must_be_three_fractions_summing_to_one(text):
    with pytest.raises(CosynthError, match="--split"):
        parse_fractions(text)
    assert parse_fractions("0.7, 0.2, 0.1") == (0.7, 0.2, 0.1)


# ----------------------------------------------------------------------------------------- real data
@pytest.mark.parametrize("n_images", [7, pytest.param(14, marks=pytest.mark.slow)])
def test_monuseg_cohort_real_coco_by_patient(tmp_path, n_images):
    """MoNuSeg images of 7 organs (plain TIFF, slide_mpp 0.25, sidecar XML without classes),
    two of them one patient's: COCO splits that pycocotools loads, no patient in two splits,
    every tile's metadata, and the tile counts of single-slide exports."""
    from pycocotools.coco import COCO

    root = data_path("monuseg", "train")
    organs = {r["image"]: r["organ"] for r in read_rows(data_path("monuseg", "organs.csv"))}
    # The DERIVED XML files (traced outlines, no ImageScope attribute block) are plain unclassified nuclei.
    derived = data_path("monuseg", "derived_xml.txt").read_text().split()
    per_organ = 1 if n_images == 7 else 2
    images = [img for img in derived if [organs[i] for i in derived[:derived.index(img)]].count(organs[img]) < per_organ]
    images += [img for img in derived if img not in images][:n_images - len(images)]
    assert len(images) == n_images and len({organs[i] for i in images}) == 7
    rows = [[os.path.relpath(root / f"{img}.tif", tmp_path), organs[img], "P-shared" if k in (1, 2) else img[:12], 0.25]
            for k, img in enumerate(images)]
    csv_path = write_cohort(tmp_path / "cohort.csv", ["slide", "tissue", "patient", "slide_mpp"], rows)
    out = tmp_path / "out"
    grid = ["--mpp", "0.5", "--tile-size", "128"]
    assert main(["export", "--cohort", str(csv_path), "--source", "real", "--format", "coco", "--out", str(out),
                 "--no-progress", "--seed", "1", *grid]) == 0
    table = read_rows(out / "cohort.csv")
    assert [r["status"] for r in table] == ["ok"] * n_images
    split_of: dict[str, set[str]] = {}
    for r in table:
        split_of.setdefault(r["patient"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values()) and len(split_of) == n_images - 1
    summary = json.loads((out / "cohort.json").read_text())
    seen_tiles = 0
    for split in SPLITS:
        check_coco(out / split)
        coco = json.loads((out / split / "annotations.json").read_text())
        for image in coco["images"]:
            prov = image["wsi_cosynth"]["provenance"]
            assert prov["split"] == split and split_of[prov["patient"]] == {split}
            assert prov["source"].endswith(".tif") and prov["x_slide"] is not None and prov["y_slide"] is not None
        assert summary["splits"][split]["tiles"] == len(coco["images"])
        assert summary["splits"][split]["classes"]["nucleus"] == len(coco["annotations"])
        seen_tiles += len(coco["images"])
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            assert len(COCO(str(out / split / "annotations.json")).getImgIds()) == len(coco["images"])
    assert seen_tiles == sum(int(r["tiles"]) for r in table) == summary["tiles"]
    for r, img in zip(table, images):
        single = export_real(root / f"{img}.tif", None, tmp_path / "single" / img, "coco", mpp=0.5, tile_size=128,
                             slide_mpp=0.25)
        assert (int(r["tiles"]), int(r["nuclei"])) == (single.n_tiles, single.n_nuclei), img


# ----------------------------------------------------------------------------------------- bad slides
def test_bad_slides_are_listed_and_the_others_exported(study, tmp_path, capsys):
    (tmp_path / "corrupt.svs").write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    blank = write_svs(tmp_path / "blank.svs", np.full((384, 384, 3), 244, np.uint8), mpp=0.25, downsamples=(1,))
    blank.with_suffix(".geojson").write_text((study / "slides" / "a0.geojson").read_text())
    bare = tmp_path / "bare.svs"
    bare.write_bytes((study / "slides" / "a0.svs").read_bytes())  # no annotations beside it
    slides = study / "slides"
    rows = [[slides / "a0.svs", "p0"], [tmp_path / "missing.svs", "p1"], [tmp_path / "corrupt.svs", "p2"],
            [slides / "a1.svs", "p3"], [blank, "p4"], [bare, "p5"]]
    csv_path = write_cohort(tmp_path / "cohort.csv", ["slide", "patient"], rows)
    out = tmp_path / "out"
    argv = ["export", "--cohort", str(csv_path), "--source", "real", "--format", "lizard", "--out", str(out),
            "--no-progress", "--tile-size", "48", "--taxonomy", "lizard"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ": error: " in ln]) == 1, err
    assert (out / "cohort.csv").is_file(), err
    status = {Path(r["slide"]).name: r["status"] for r in read_rows(out / "cohort.csv")}
    assert status["a0.svs"] == status["a1.svs"] == "ok"
    assert "not found" in status["missing.svs"] and "corrupt.svs" in status["corrupt.svs"]
    assert "no tissue" in status["blank.svs"] and "no nuclei annotations" in status["bare.svs"]
    assert all(s.startswith("failed: ") and "\n" not in s for k, s in status.items() if k not in ("a0.svs", "a1.svs"))
    exported = {t.provenance.source for split in SPLITS for t in read_dataset(out / split, "lizard")}
    assert {Path(s).name for s in exported} == {"a0.svs", "a1.svs"}
    work = tmp_path / ".out.cosynth-cohort"
    assert work.is_dir()  # kept: a rerun after fixing the bad slides redoes only those
    assert main([*argv, "--overwrite", "--skip-bad-slides"]) == 0
    assert not work.exists() and not list(tmp_path.glob(".out.*partial*"))


def test_nothing_exported_is_one_clean_error(tmp_path, capsys):
    csv_path = write_cohort(tmp_path / "c.csv", ["slide"], [["gone1.svs"], ["gone2.svs"]])
    assert main(["export", "--cohort", str(csv_path), "--source", "real", "--format", "coco", "--out",
                 str(tmp_path / "out"), "--no-progress", "--skip-bad-slides"]) == 2
    err = capsys.readouterr().err
    assert "no slide of cohort" in err and "gone1.svs" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("argv, needle", [
    (["--slide", "x.svs", "--split", "0.5,0.5,0"], "--split and --skip-bad-slides go with --cohort"),
    (["--slide", "x.svs", "--cohort", "c.csv"], "drop --slide"),
    ([], "give --slide FILE (one slide) or --cohort CSV"),
])
def test_cohort_and_slide_options_do_not_mix(tmp_path, capsys, argv, needle):
    assert main(["export", *argv, "--format", "coco", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert needle in capsys.readouterr().err and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("fmt", ["coco", "lizard", "pannuke", "geojson", "consep"])
def test_every_format_gets_a_complete_dataset_per_split(fmt, study, tiny_model, tmp_path):
    rows = [[f"slides/a{i}.svs", f"p{i}", "colon", "" if i else "test"] for i in range(4)]
    csv_path = write_cohort(study / f"cohort-{fmt}.csv", ["slide", "patient", "tissue", "split"], rows)
    out = tmp_path / fmt
    assert main(["export", "--cohort", str(csv_path), "--model", str(tiny_model), "--format", fmt, "--out", str(out),
                 "--steps", "2", "--max-tiles", "2", "--batch-size", "2", "--split", "0.5,0.5,0", "--no-progress"]) == 0
    table = read_rows(out / "cohort.csv")
    assert table[0]["split"] == "test"  # the fixed assignment won over a fraction of 0
    for split in SPLITS:
        expected = [r for r in table if r["split"] == split]
        tiles = list(read_dataset(out / split, fmt)) if expected else []
        assert len(tiles) == sum(int(r["tiles"]) for r in expected) == 2 * len(expected)
        index = read_rows(out / split / "tiles.csv")
        assert sorted(r["name"] for r in index) == sorted(t.provenance.name for t in tiles)
        assert {(r["patient"], r["split"]) for r in index} <= {(r["patient"], split) for r in expected}
        if fmt in ("coco", "pannuke", "geojson"):  # per-tile provenance in the format's own metadata
            assert {(t.provenance.patient, t.provenance.split) for t in tiles} == {(r["patient"], split) for r in expected}
        if not tiles:
            continue
        if fmt == "coco":
            check_coco(out / split)
        elif fmt == "lizard":
            check_lizard(out / split)
        elif fmt == "pannuke":
            check_pannuke(out / split)
        elif fmt == "consep":
            check_hovernet_mat(out / split)
        else:
            for path in (out / split).glob("*.geojson"):
                check_qupath_geojson(path)


def test_api_takes_the_cli_options_and_refuses_unknown_ones(study, tiny_model, tmp_path):
    csv_path = write_cohort(tmp_path / "c.csv", ["slide", "tissue"], [[study / "slides" / "a0.svs", "colon"]])
    with pytest.raises(TypeError, match="stepz"):
        wc.export_cohort(csv_path, tmp_path / "x", model=tiny_model, stepz=3)
    summary = wc.export_cohort(csv_path, tmp_path / "api", format="pannuke", model=tiny_model, steps=2, max_tiles=1,
                               split=(1.0, 0.0, 0.0), threads=1)
    assert summary.n_tiles == 1 and not summary.failed and summary.splits["train"]["tiles"] == 1
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == ["cohort.csv", "cohort.json", "train"]


# ----------------------------------------------------------------------------------------- resume
def test_killed_cohort_resumes_with_the_finished_batches_to_the_same_files(study, tiny_model, tmp_path, monkeypatch):
    rows = [[f"slides/a{i}.svs", f"p{i // 2}", "colon"] for i in range(3)]
    csv_path = write_cohort(study / "cohort-resume.csv", ["slide", "patient", "tissue"], rows)
    common = ["--model", str(tiny_model), "--format", "coco", "--steps", "12", "--max-tiles", "2", "--batch-size", "1",
              "--seed", "5", "--no-progress", "--split", "0.5,0.5,0"]
    full = tmp_path / "full"
    assert main(["export", "--cohort", str(csv_path), "--out", str(full), *common]) == 0

    out = tmp_path / "resumed"
    work = tmp_path / ".resumed.cosynth-cohort"
    cmd = [sys.executable, "-m", "wsi_cosynth", "export", "--cohort", str(csv_path), "--out", str(out), *common]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(work.glob("slides/*/part_*.sha256")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(work.glob("slides/*/part_*.sha256")))
    assert proc.returncode == -signal.SIGKILL and 1 <= done_before < 6, "the run was not interrupted midway"
    assert not out.exists()  # nothing half-written

    import wsi_cosynth.pipeline.cohort as cohort_module

    calls = []
    real_batch = cohort_module.synthesize_batch

    def counting(spec, batch):
        calls.append(batch.index)
        return real_batch(spec, batch)

    monkeypatch.setattr(cohort_module, "synthesize_batch", counting)
    assert main(["export", "--cohort", str(csv_path), "--out", str(out), *common]) == 0
    assert len(calls) == 6 - done_before  # only the batches the killed run had not finished
    assert files_of(out) == files_of(full)
    assert not work.exists()


def test_changed_settings_are_refused_until_restart(study, tiny_model, tmp_path, capsys):
    csv_path = write_cohort(tmp_path / "c.csv", ["slide"], [[study / "slides" / "a0.svs"]])
    work = tmp_path / ".out.cosynth-cohort"
    work.mkdir()
    (work / "manifest.json").write_text(json.dumps({"settings": {"seed": 99}}))
    argv = ["export", "--cohort", str(csv_path), "--model", str(tiny_model), "--format", "coco", "--out",
            str(tmp_path / "out"), "--steps", "2", "--max-tiles", "1", "--no-progress", "--tissue", "colon"]
    assert main(argv) == 2
    assert "different settings" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main([*argv, "--restart"]) == 0


# ----------------------------------------------------------------------------------------- threads
def test_sampling_gives_the_same_tiles_whatever_the_callers_thread_count(tmp_path):
    """A 64 px tiny model is big enough for oneDNN to split its 1 x 1 convolutions over threads:
    synthesis tasks pin their thread count, so the caller's (1, 2 or 3; or a pool thread) does not matter."""
    import threading

    from wsi_cosynth.pipeline.jobs import make_batches, plan_jobs
    from wsi_cosynth.pipeline.worker import SamplingSpec, synthesize_batch
    from wsi_cosynth.records import Layout, Provenance

    torch.manual_seed(0)
    model = CosynthModel(load_config("tiny"), get_taxonomy("consep"), mpp=0.5, tile_size=64)
    path = save_checkpoint(tmp_path / "m64", model, steps=0)
    rng = np.random.default_rng(0)
    layouts = [Layout(xy_tile=rng.uniform(0, 64, (40, 2)), classes=rng.integers(1, 5, 40), size=(64, 64),
                      taxonomy=model.taxonomy, provenance=Provenance(name=f"t{i}", tissue="colon")) for i in range(2)]
    batch = make_batches(plan_jobs(layouts, 1), 2, seed=1)[0]
    spec = SamplingSpec(model_path=str(path), steps=4, device="cpu")
    before = torch.get_num_threads()
    results = []
    try:
        for ambient in (1, 2, 3):
            torch.set_num_threads(ambient)
            results.append([t.image for t in synthesize_batch(spec, batch)])
            assert torch.get_num_threads() == ambient  # restored
    finally:
        torch.set_num_threads(before)
    box: list = []
    worker = threading.Thread(target=lambda: box.append([t.image for t in synthesize_batch(spec, batch)]))
    worker.start()
    worker.join()
    for other in [*results[1:], box[0]]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0], other))


def test_slides_without_annotations_have_their_nuclei_detected(tmp_path, capsys):
    """A synthetic cohort with an unannotated slide: its planning task runs the bundled detector,
    the detections stay beside the output (``<out>.detections/<stem>.geojson``) and become its
    layouts; the annotated slide keeps its own nuclei."""
    base = load_config("tiny").to_dict()
    base["model"]["unknown_class"] = True
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "tiny", CosynthModel(type(load_config("tiny")).from_dict(base),
                                                           get_taxonomy("consep"), mpp=0.5, tile_size=32), steps=0)
    slides = tmp_path / "slides"
    slides.mkdir()
    bare = write_svs(slides / "bare.svs", synthetic_he(384, 384, seed=3, tissue_fraction=0.7), mpp=0.25,
                     downsamples=(1,))
    annotated = write_svs(slides / "annotated.svs", synthetic_he(384, 384, seed=4, tissue_fraction=0.7), mpp=0.25,
                          downsamples=(1,))
    annotated.with_suffix(".geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "features": _square_nuclei(np.random.default_rng(0), 40, 120, 384, 384)}))
    csv_path = write_cohort(tmp_path / "c.csv", ["slide", "patient", "tissue"],
                            [[bare, "p0", "colon"], [annotated, "p1", "colon"]])
    out = tmp_path / "out"
    assert main(["export", "--cohort", str(csv_path), "--model", str(model), "--format", "coco", "--out", str(out),
                 "--steps", "1", "--max-tiles", "2", "--split", "1,0,0", "--no-progress", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    detections = tmp_path / "out.detections" / "bare.geojson"
    n = len(json.loads(detections.read_text())["features"])
    assert n > 0 and f"bare: slide has no nuclei annotations: using the {n} nuclei found by the detector" in err
    assert not (tmp_path / "out.detections" / "annotated.geojson").exists()
    assert {r["status"] for r in read_rows(out / "cohort.csv")} == {"ok"}
    # Real tiles need labels: a cohort does not label them with the detector.
    assert main(["export", "--cohort", str(csv_path), "--source", "real", "--labels", "detect", "--format", "coco",
                 "--out", str(tmp_path / "real"), "--no-progress"]) == 2
    assert "wsi-cosynth detect" in capsys.readouterr().err
