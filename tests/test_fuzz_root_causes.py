"""One test per root cause the mutation fuzzing found: each failed (traceback or silent
acceptance) before its fix. Bad input must end in exit 2 with one line naming the file; bad
geometry is dropped with a counted warning, or is an error with ``--strict-geometry``."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import data_path
from fuzzing import assert_clean, no_partial_output, run_cli
from slide_fixtures import synthetic_he, write_svs

pytestmark = pytest.mark.filterwarnings("ignore::wsi_cosynth.annotations.AnnotationWarning")


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slide")
    return write_svs(root / "s.svs", synthetic_he(512, 512, seed=3, tissue_fraction=1.0), mpp=0.25)


def _square(x: float, y: float, r: float = 6.0) -> list[list[float]]:
    return [[x - r, y - r], [x + r, y - r], [x + r, y + r], [x - r, y + r], [x - r, y - r]]


def _qupath(rings: list) -> dict:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"objectType": "detection", "classification": {"name": "Tumor"}}} for ring in rings]}


def _export_real(slide: Path, annotations: Path, out: Path, *extra: str):
    return run_cli(["export", "--source", "real", "--slide", str(slide), "--annotations", str(annotations),
                    "--format", "coco", "--mpp", "0.25", "--out", str(out), "--no-progress", *extra])


@pytest.fixture(scope="module")
def mini_consep(tmp_path_factory) -> Path:
    src = data_path("consep", "train")
    dst = tmp_path_factory.mktemp("consep") / "c"
    for sub in ("images", "inst", "type_mat"):
        (dst / sub).mkdir(parents=True)
    for s in ("train_10_000", "train_10_001"):
        shutil.copy(src / "images" / f"{s}.jpg", dst / "images")
        shutil.copy(src / "inst" / f"{s}.npy", dst / "inst")
        shutil.copy(src / "type_mat" / f"{s}.mat", dst / "type_mat")
    return dst


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def geojson_dataset(tmp_path_factory, mini_consep) -> Path:
    out = tmp_path_factory.mktemp("gj") / "g"
    assert run_cli(["convert", str(mini_consep), str(out), "--from", "consep", "--to", "geojson", "--quiet"]).rc == 0
    return out


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory, mini_consep) -> Path:
    out = tmp_path_factory.mktemp("coco") / "c"
    assert run_cli(["convert", str(mini_consep), str(out), "--from", "consep", "--to", "coco", "--quiet"]).rc == 0
    return out


@pytest.fixture(scope="module")
def hovernet_dir(tmp_path_factory) -> Path:
    fmt = data_path("formats", "hovernet")
    root = tmp_path_factory.mktemp("hn") / "h"
    (root / "json").mkdir(parents=True)
    (root / "images").mkdir()
    shutil.copy(fmt / "DERIVED_hovernet_tile_output.json", root / "json" / "t.json")
    shutil.copy(fmt / "hover_net_type_info.json", root / "type_info.json")
    from PIL import Image

    Image.fromarray(synthetic_he(256, 256, seed=1)).save(root / "images" / "t.png")
    return root


def _convert(src: Path, fmt: str, out: Path, *extra: str):
    return run_cli(["convert", str(src), str(out), "--from", fmt, "--to", "coco", "--quiet", *extra])


# ----------------------------------------------------------------------------------------- 1 QuPath geometry
def test_qupath_nan_coordinate_is_dropped_with_a_count_or_an_error(slide, tmp_path):
    ann = tmp_path / "a.geojson"
    ann.write_text(json.dumps(_qupath([_square(100, 100), [[0, 0], [float("nan"), 5], [20, 30], [0, 0]]])))
    res = _export_real(slide, ann, tmp_path / "out")
    assert res.error is None, res.error
    assert res.rc == 0 and "1 unusable geometry skipped (1 non-finite coordinate)" in res.stdout + res.stderr, res.stderr
    strict = _export_real(slide, ann, tmp_path / "out2", "--strict-geometry")
    assert_clean(strict, names=ann)
    assert not (tmp_path / "out2").exists() and no_partial_output(tmp_path)


@pytest.mark.parametrize("ring", [
    [[1e300, 5], [20, 5], [20, 30], [1e300, 5]],
    [[-1e300, -1e300], [1e300, -1e300], [1e300, 1e300], [-1e300, -1e300]],
    [[10, 10], [20, 20], [10, 10], [20, 20]],  # two distinct points
], ids=["1e300", "huge-square", "two-points"])
def test_qupath_absurd_or_degenerate_polygons_are_not_silent(slide, tmp_path, ring):
    ann = tmp_path / "a.geojson"
    ann.write_text(json.dumps(_qupath([_square(100, 100), ring])))
    res = _export_real(slide, ann, tmp_path / "out", "--strict-geometry")
    assert_clean(res, names=ann)


def test_nuclei_outside_the_slide_are_an_error_under_strict_geometry(slide, tmp_path):
    ann = tmp_path / "a.geojson"
    ann.write_text(json.dumps(_qupath([_square(100, 100), _square(5000, 5000)])))
    res = _export_real(slide, ann, tmp_path / "out")
    assert res.rc == 0 and "1 of 2 nuclei lie outside the slide" in res.stdout + res.stderr
    assert_clean(_export_real(slide, ann, tmp_path / "out2", "--strict-geometry"), names=ann)


# ----------------------------------------------------------------------------------------- 2 HoVer-Net contours
@pytest.mark.parametrize("bad", [None, float("nan"), -1e300], ids=["null", "nan", "-1e300"])
def test_hovernet_json_bad_contour_values(hovernet_dir, tmp_path, bad):
    src = _copy(hovernet_dir, tmp_path)
    data = json.loads((src / "json" / "t.json").read_text())
    first = next(iter(data["nuc"]))
    data["nuc"][first]["contour"][1] = [bad, 3]
    (src / "json" / "t.json").write_text(json.dumps(data))
    lenient = _convert(src, "hovernet-json", tmp_path / "out")
    assert lenient.error is None, lenient.error
    assert lenient.rc == 0 and "1 object" in lenient.stderr, lenient.stderr
    assert_clean(_convert(src, "hovernet-json", tmp_path / "out2", "--strict-geometry"), names="t.json")


# ----------------------------------------------------------------------------------------- 3 image bombs
def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_image_claiming_60000_squared_pixels(mini_consep, tmp_path):
    src = _copy(mini_consep, tmp_path)
    (src / "images" / "train_10_000.jpg").unlink()
    (src / "images" / "train_10_000.png").write_bytes(_png_header(60000, 60000))
    assert_clean(_convert(src, "consep", tmp_path / "out"), names="train_10_000.png")


def test_degenerate_one_pixel_image_in_geojson_dataset(geojson_dataset, tmp_path):
    from PIL import Image

    src = _copy(geojson_dataset, tmp_path)
    first = sorted((src / "images").iterdir())[0]
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(first)
    assert_clean(_convert(src, "geojson", tmp_path / "out"), names=first.name)


# ----------------------------------------------------------------------------------------- 4 JSON structure
def test_coco_image_record_not_an_object(coco_dataset, tmp_path):
    src = _copy(coco_dataset, tmp_path)
    data = json.loads((src / "annotations.json").read_text())
    data["images"][1] = []
    (src / "annotations.json").write_text(json.dumps(data))
    assert_clean(_convert(src, "coco", tmp_path / "out"), names="annotations.json")


def test_geojson_index_entry_name_not_a_string(geojson_dataset, tmp_path):
    src = _copy(geojson_dataset, tmp_path)
    index = json.loads((src / "index.json").read_text())
    index["tiles"][0]["name"] = ["x"]
    (src / "index.json").write_text(json.dumps(index))
    assert_clean(_convert(src, "geojson", tmp_path / "out"), names="index.json")


def test_json_nested_100k_deep(coco_dataset, tmp_path):
    src = _copy(coco_dataset, tmp_path)
    (src / "annotations.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    assert_clean(_convert(src, "coco", tmp_path / "out"), names="annotations.json")


# ----------------------------------------------------------------------------------------- 5 encodings, types
def test_lizard_info_csv_not_utf8(tmp_path, mini_consep):
    out = tmp_path / "liz"
    assert _convert(mini_consep, "consep", tmp_path / "unused").rc == 0
    assert run_cli(["convert", str(mini_consep), str(out), "--from", "consep", "--to", "lizard", "--quiet"]).rc == 0
    (out / "info.csv").write_bytes(b"Filename,Source,Split\ntrain_10_000,caf\xe9\xff,1\n")
    assert_clean(_convert(out, "lizard", tmp_path / "out"), names="info.csv")


def test_consep_inst_type_cell_array(mini_consep, tmp_path):
    src = _copy(mini_consep, tmp_path)
    mat = scipy.io.loadmat(src / "type_mat" / "train_10_000.mat")
    cells = np.empty((len(mat["inst_type"]), 1), dtype=object)
    for i, v in enumerate(mat["inst_type"][:, 0]):
        cells[i, 0] = np.array([[v, v]])
    scipy.io.savemat(src / "type_mat" / "train_10_000.mat", {"inst_type": cells})
    assert_clean(_convert(src, "consep", tmp_path / "out"), names="train_10_000.mat")


def test_consep_inst_centroid_negative(mini_consep, tmp_path):
    src = _copy(mini_consep, tmp_path)
    mat = scipy.io.loadmat(src / "type_mat" / "train_10_000.mat")
    mat = {k: v for k, v in mat.items() if not k.startswith("__")}
    mat["inst_centroid"] = -np.abs(mat["inst_centroid"]) - 3.0
    scipy.io.savemat(src / "type_mat" / "train_10_000.mat", mat)
    assert_clean(_convert(src, "consep", tmp_path / "out"), names="train_10_000.mat")


def test_hovernet_type_info_entry_not_a_list(hovernet_dir, tmp_path):
    src = _copy(hovernet_dir, tmp_path)
    (src / "type_info.json").write_text(json.dumps({"0": ["nolabe", [0, 0, 0]], "4": {}}))
    assert_clean(_convert(src, "hovernet-json", tmp_path / "out"), names="type_info.json")


# ----------------------------------------------------------------------------------------- 6 training config
def test_bad_training_config_is_one_line(tmp_path, mini_consep):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  base_channels: -3\n  widths: [1, 2, x]\ntrain:\n  lr: fast\n  steps: [1]\n")
    res = run_cli(["train", "--config", str(cfg), "--data", str(mini_consep), "--out", str(tmp_path / "run"),
                   "--no-progress"])
    assert_clean(res, names=cfg)


# ----------------------------------------------------------------------------------------- 7 silent fallbacks
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_sidecar_fifo_is_rejected(slide, tmp_path):
    s = tmp_path / "s.svs"
    shutil.copy(slide, s)
    os.mkfifo(tmp_path / "s.geojson")
    res = run_cli(["export", "--source", "real", "--slide", str(s), "--format", "coco", "--mpp", "0.25",
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert_clean(res, names="s.geojson")


def test_sidecar_symlink_loop_is_rejected(slide, tmp_path):
    s = tmp_path / "s.svs"
    shutil.copy(slide, s)
    os.symlink(tmp_path / "s.geojson", tmp_path / "s.geojson")
    res = run_cli(["export", "--source", "real", "--slide", str(s), "--format", "coco", "--mpp", "0.25",
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert_clean(res, names="s.geojson")


@pytest.mark.parametrize("how", ["missing", "directory"])
def test_consep_image_missing_or_not_a_file(mini_consep, tmp_path, how):
    src = _copy(mini_consep, tmp_path)
    img = src / "images" / "train_10_001.jpg"
    img.unlink()
    if how == "directory":
        img.mkdir()
    assert_clean(_convert(src, "consep", tmp_path / "out"), names="train_10_001")


def test_coco_duplicate_annotation_ids(coco_dataset, tmp_path):
    src = _copy(coco_dataset, tmp_path)
    data = json.loads((src / "annotations.json").read_text())
    data["annotations"][1]["id"] = data["annotations"][0]["id"]
    (src / "annotations.json").write_text(json.dumps(data))
    assert_clean(_convert(src, "coco", tmp_path / "out"), names="annotations.json")


def test_coco_absurd_image_id(coco_dataset, tmp_path):
    src = _copy(coco_dataset, tmp_path)
    data = json.loads((src / "annotations.json").read_text())
    old = data["images"][0]["id"]
    data["images"][0]["id"] = 1e30
    for a in data["annotations"]:
        if a["image_id"] == old:
            a["image_id"] = 1e30
    (src / "annotations.json").write_text(json.dumps(data))
    assert_clean(_convert(src, "coco", tmp_path / "out"), names="annotations.json")


# ----------------------------------------------------------------------------------------- 8 resources
@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_output_parent_not_writable(mini_consep, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        assert_clean(_convert(mini_consep, "consep", parent / "out"), names=parent / "out")
    finally:
        parent.chmod(0o755)


def test_output_parent_not_writable_by_injection(mini_consep, tmp_path, monkeypatch):
    import tempfile

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "out"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    assert_clean(_convert(mini_consep, "consep", tmp_path / "out"), names=tmp_path / "out")


def test_disk_full_while_writing(mini_consep, tmp_path, monkeypatch):
    import wsi_cosynth.exporters._common as common

    def full(path, image):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(common, "save_png", full)
    assert_clean(_convert(mini_consep, "consep", tmp_path / "out"), names=tmp_path / "out")
    assert not (tmp_path / "out").exists() and no_partial_output(tmp_path)


# ----------------------------------------------------------------------------------------- found later
@pytest.mark.parametrize("color", [[300, 0, 0], [-1, 0, 0], [True, 0, 0]])
def test_coco_category_colour_out_of_range_does_not_poison_the_output(coco_dataset, tmp_path, color):
    """A COCO category colour outside 0..255 (or a bool) was copied into the converted dataset's
    taxonomy.json, which then could not be read back."""
    from wsi_cosynth.exporters import read_dataset

    src = _copy(coco_dataset, tmp_path)
    ann = src / "annotations.json"
    data = json.loads(ann.read_text())
    data["categories"][0]["color"] = color
    ann.write_text(json.dumps(data))
    out = tmp_path / "out"
    res = run_cli(["convert", str(src), str(out), "--from", "coco", "--to", "pannuke", "--quiet"])
    assert res.rc == 0 and res.error is None, (res.stderr, res.error)
    tiles = list(read_dataset(out, "pannuke"))
    assert tiles and all(0 <= v <= 255 for c in tiles[0].taxonomy.colors for v in c)
