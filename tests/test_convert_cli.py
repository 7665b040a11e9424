"""`wsi-cosynth convert` end to end: success, and bad input -> exit 2, one-line error, nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from wsi_cosynth.cli import main
from wsi_cosynth.exporters import read_dataset


def _mini_consep(src: Path, dst: Path, n: int = 3) -> Path:
    """A CoNSeP-layout folder with the first ``n`` real tiles."""
    for sub in ("images", "inst", "type_mat"):
        (dst / sub).mkdir(parents=True)
    stems = sorted(p.stem for p in (src / "images").glob("*.jpg"))[:n]
    for s in stems:
        shutil.copy(src / "images" / f"{s}.jpg", dst / "images")
        shutil.copy(src / "inst" / f"{s}.npy", dst / "inst")
        shutil.copy(src / "type_mat" / f"{s}.mat", dst / "type_mat")
    return dst


def test_convert_subprocess_consep_to_coco(tmp_path, consep_dir):
    src = _mini_consep(consep_dir, tmp_path / "src")
    out = tmp_path / "coco"
    proc = subprocess.run([sys.executable, "-m", "wsi_cosynth", "convert", str(src), "--from", "consep",
                           "--to", "coco", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "annotations.json").is_file() and len(list((out / "images").glob("*.png"))) == 3
    assert "tile" in proc.stderr  # the progress bar
    back = list(read_dataset(out, "coco"))
    assert [t.provenance.name for t in back] == ["train_10_000", "train_10_001", "train_10_002"]


@pytest.mark.parametrize("to", ["lizard", "pannuke", "geojson"])
def test_convert_cellvit_to_each(tmp_path, nucls_dir, to):
    out = tmp_path / to
    assert main(["convert", str(nucls_dir), "--from", "cellvit", "--to", to, str(out), "--quiet"]) == 0
    assert sum(t.n_nuclei for t in read_dataset(out, to)) == sum(t.n_nuclei for t in read_dataset(nucls_dir, "cellvit"))


def test_convert_with_taxonomy_and_class_map(tmp_path, consep_dir):
    src = _mini_consep(consep_dir, tmp_path / "src", 2)
    cmap = tmp_path / "map.yaml"
    cmap.write_text("other: dead\nspindle: connective\n")
    out = tmp_path / "pn"
    assert main(["convert", str(src), "--from", "consep", "--to", "pannuke", str(out), "--taxonomy", "pannuke",
                 "--class-map", str(cmap), "--quiet"]) == 0
    tiles = list(read_dataset(out, "pannuke"))
    assert tiles[0].taxonomy.key == "pannuke"
    orig = list(read_dataset(src, "consep"))
    lut = {1: 4, 2: 2, 3: 5, 4: 3}  # other->dead, inflammatory, epithelial, spindle->connective
    assert [lut[c] for c in orig[0].classes] == tiles[0].classes.tolist()


def _expect_error(capsys, argv, out: Path, *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("wsi-cosynth convert: error:")
    for needle in needles:
        assert needle in err, err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temp leftovers


def test_missing_source(tmp_path, capsys):
    out = tmp_path / "o"
    _expect_error(capsys, ["convert", str(tmp_path / "nope"), "--from", "consep", "--to", "coco", str(out)],
                  out, "not found", "nope")


def test_corrupt_image(tmp_path, capsys, consep_dir):
    src = _mini_consep(consep_dir, tmp_path / "src")
    (src / "images" / "train_10_001.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "o"
    _expect_error(capsys, ["convert", str(src), "--from", "consep", "--to", "coco", str(out), "--quiet"],
                  out, "train_10_001.jpg", "cannot be read")


def test_wrong_keys(tmp_path, capsys, consep_dir):
    src = _mini_consep(consep_dir, tmp_path / "src")
    scipy.io.savemat(src / "type_mat" / "train_10_002.mat", {"wrong": np.ones(3)})
    out = tmp_path / "o"
    _expect_error(capsys, ["convert", str(src), "--from", "consep", "--to", "lizard", str(out), "--quiet"],
                  out, "train_10_002.mat", "inst_type")


def test_cellvit_wrong_keys(tmp_path, capsys, nucls_dir):
    src = tmp_path / "src"
    shutil.copytree(nucls_dir / "test", src)
    np.save(src / "labels" / "test_2.npy", np.array({"inst": np.zeros((256, 256))}, dtype=object), allow_pickle=True)
    out = tmp_path / "o"
    _expect_error(capsys, ["convert", str(src), "--from", "cellvit", "--to", "coco", str(out), "--quiet"],
                  out, "test_2.npy", "inst_map")


def test_shape_mismatch(tmp_path, capsys, consep_dir):
    src = _mini_consep(consep_dir, tmp_path / "src")
    np.save(src / "inst" / "train_10_001.npy", np.zeros((128, 256), np.int32))
    out = tmp_path / "o"
    _expect_error(capsys, ["convert", str(src), "--from", "consep", "--to", "pannuke", str(out), "--quiet"],
                  out, "train_10_001.npy", "(128, 256)", "(256, 256)")


def test_class_not_in_taxonomy(tmp_path, capsys, consep_dir):
    src = _mini_consep(consep_dir, tmp_path / "src")
    out = tmp_path / "o"
    _expect_error(capsys, ["convert", str(src), "--from", "consep", "--to", "coco", str(out), "--taxonomy",
                           "pannuke", "--quiet"], out, "'other'", "pannuke")
    mat = scipy.io.loadmat(src / "type_mat" / "train_10_000.mat")
    mat["inst_type"][0, 0] = 9
    scipy.io.savemat(src / "type_mat" / "train_10_000.mat", {k: v for k, v in mat.items() if not k.startswith("__")})
    _expect_error(capsys, ["convert", str(src), "--from", "consep", "--to", "coco", str(out), "--quiet"],
                  out, "train_10_000.mat", "type 9")


def test_coco_category_without_id(tmp_path, capsys, consep_dir):
    src = tmp_path / "coco"
    assert main(["convert", str(_mini_consep(consep_dir, tmp_path / "src")), "--from", "consep", "--to", "coco",
                 str(src), "--quiet"]) == 0
    data = json.loads((src / "annotations.json").read_text())
    data["categories"][0]["id"] = None
    (src / "annotations.json").write_text(json.dumps(data))
    out = tmp_path / "o"
    _expect_error(capsys, ["convert", str(src), "--from", "coco", "--to", "lizard", str(out), "--quiet"],
                  out, "annotations.json", "integer 'id'")
    data["categories"][0]["id"] = 1
    counts = data["annotations"][0]["segmentation"]["counts"]
    data["annotations"][0]["segmentation"]["counts"] = counts[:-1] + "_"  # a run cut inside its bytes
    (src / "annotations.json").write_text(json.dumps(data))
    _expect_error(capsys, ["convert", str(src), "--from", "coco", "--to", "lizard", str(out), "--quiet"],
                  out, "annotations.json", "RLE")


def test_too_many_nuclei_for_uint16_are_kept(tmp_path, capsys):
    """A CoNSeP-layout tile with 90,000 nuclei converts without truncation (int32 everywhere)."""
    from PIL import Image

    src = tmp_path / "src"
    for sub in ("images", "inst", "type_mat"):
        (src / sub).mkdir(parents=True)
    r, c = np.mgrid[0:600, 0:600]
    inst = ((r // 2) * 300 + (c // 2) + 1).astype(np.int32)
    Image.fromarray(np.zeros((600, 600, 3), np.uint8)).save(src / "images" / "big.png")
    np.save(src / "inst" / "big.npy", inst)
    scipy.io.savemat(src / "type_mat" / "big.mat", {"inst_type": np.full((90_000, 1), 2, np.int64)})
    out = tmp_path / "liz"
    assert main(["convert", str(src), "--from", "consep", "--to", "lizard", str(out), "--quiet"]) == 0
    (tile,) = read_dataset(out, "lizard")
    assert tile.n_nuclei == 90_000 and np.array_equal(tile.instances, inst)


def test_output_not_empty(tmp_path, capsys, consep_dir):
    src = _mini_consep(consep_dir, tmp_path / "src", 1)
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["convert", str(src), "--from", "consep", "--to", "coco", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "x"
