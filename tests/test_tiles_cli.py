"""``wsi-cosynth tiles``: tile PNGs, CSV/JSON index, thumbnail, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
from conftest import data_path
from PIL import Image

from wsi_cosynth.cli import main


def test_tiles_on_real_slide_with_annotations(tmp_path, capsys):
    out = tmp_path / "tiles"
    rc = main(["tiles", "--slide", str(data_path("monusac", "A9K0_1.svs")), "--mpp", "0.5", "--tile-size", "128",
               "--tissue", "kidney", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr()
    rows = list(csv.DictReader((out / "index.csv").open()))
    pngs = sorted((out / "tiles").glob("*.png"))
    assert len(rows) == len(pngs) == 9  # 1307 x 1153 px at 0.194 um/px -> 508 x 448 px at 0.5
    assert all("-" not in r["name"] for r in rows) and {r["tissue"] for r in rows} == {"kidney"}
    assert sum(int(r["n_nuclei"]) for r in rows) > 100
    tile = np.asarray(Image.open(pngs[0]))
    assert tile.shape == (128, 128, 3)
    index = json.loads((out / "index.json").read_text())
    assert index["mpp"] == 0.5 and len(index["tiles"]) == 9 and index["annotations"].endswith("A9K0_1.xml")
    x0 = int(rows[1]["x_level0"])
    assert abs(x0 - 128 * 0.5 / 0.19448) <= 1  # positions are level-0 pixels
    thumb = np.asarray(Image.open(out / "thumbnail.png"))
    assert thumb.ndim == 3 and (thumb == [255, 0, 0]).all(axis=2).any()  # grid drawn in red
    assert (out / "tissue_mask.png").is_file()


def test_tiles_cli_errors_leave_nothing(tmp_path, capsys):
    out = tmp_path / "t"
    rc = main(["tiles", "--slide", str(data_path("slides", "small_dicom.dcm")), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "small_dicom.dcm" in err and "--slide-mpp" in err and "Traceback" not in err
    assert not out.exists()
    rc = main(["tiles", "--slide", str(data_path("slides", "small_dicom.dcm")), "--slide-mpp", "0.5", "--mpp", "2",
               "--tile-size", "128", "--out", str(out), "--no-progress"])
    assert rc == 0 and len(list((out / "tiles").glob("*.png"))) > 3
    rc = main(["tiles", "--slide", str(data_path("slides", "small_dicom.dcm")), "--slide-mpp", "0.5", "--out", str(out)])
    assert rc == 2 and "not an empty directory" in capsys.readouterr().err
