"""Everyday inputs end to end, checked with the consumers' own rules: a MoNuSeg-style strip TIFF
with unclassified Aperio XML, PNG/JPEG regions, regions smaller than a tile, multi-part nuclei
in GeoJSON, Lizard/HoVer-Net class ids, PanNuke tissue types, output flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tifffile
import torch
from PIL import Image

from conftest import data_path
from consumer_checks import (
    check_coco,
    check_hovernet_mat,
    check_lizard,
    check_pannuke,
    check_qupath_geojson,
    check_tiatoolbox_geojson,
)
from slide_fixtures import synthetic_he
from wsi_cosynth.cli import main
from wsi_cosynth.exporters import open_writer, read_dataset
from wsi_cosynth.records import LabelledTile, Provenance
from wsi_cosynth.taxonomy import get_taxonomy

FORMATS = ("coco", "lizard", "pannuke", "geojson", "consep")


# ----------------------------------------------------------------------------------------- fixtures
def _aperio_xml(path: Path, centres: np.ndarray, radius: float = 6.0) -> Path:
    """MoNuSeg-style ImageScope XML: polygon regions whose only attribute is "Nucleus" (no class);
    the last few under an Annotation with no attributes at all."""
    def region(i: int, x: float, y: float) -> str:
        t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        verts = "".join(f'<Vertex X="{x + radius * np.cos(a):.2f}" Y="{y + 0.8 * radius * np.sin(a):.2f}"/>' for a in t)
        return f'<Region Id="{i}" Type="0"><Vertices>{verts}</Vertices></Region>'

    split = len(centres) - 3
    first = "".join(region(i, x, y) for i, (x, y) in enumerate(centres[:split]))
    rest = "".join(region(i, x, y) for i, (x, y) in enumerate(centres[split:], split))
    path.write_text(
        '<Annotations MicronsPerPixel="0.252000">'
        '<Annotation Id="1"><Attributes><Attribute Name="Nucleus" Id="0" Value=""/></Attributes>'
        f"<Regions>{first}</Regions></Annotation>"
        f'<Annotation Id="2"><Regions>{rest}</Regions></Annotation></Annotations>'
    )
    return path


@pytest.fixture(scope="module")
def monuseg(tmp_path_factory) -> Path:
    """A 1000 x 1000 strip TIFF at 0.252 um/px (resolution tags in cm) with a sidecar Aperio XML."""
    folder = tmp_path_factory.mktemp("monuseg")
    image = synthetic_he(1000, 1000, seed=4, tissue_fraction=1.0)
    tifffile.imwrite(folder / "TCGA_A7_A13E.tif", image, photometric="rgb", rowsperstrip=8, compression="lzw",
                     resolution=(1e4 / 0.252, 1e4 / 0.252), resolutionunit="CENTIMETER")
    centres = np.random.default_rng(5).uniform(20, 980, size=(80, 2))
    _aperio_xml(folder / "TCGA_A7_A13E.xml", centres)
    return folder / "TCGA_A7_A13E.tif"


def _real(slide: Path, out: Path, *extra: str) -> int:
    return main(["export", "--source", "real", "--slide", str(slide), "--out", str(out), "--mpp", "0.25",
                 "--min-tissue", "0", "--no-progress", *extra])


def _consumer_check(fmt: str, out: Path) -> None:
    if fmt == "coco":
        check_coco(out)
    elif fmt == "lizard":
        check_lizard(out)
    elif fmt == "pannuke":
        check_pannuke(out)
    elif fmt == "consep":
        check_hovernet_mat(out, consep_loader=False)
    else:
        files = sorted(out.rglob("*.geojson"))
        assert files
        for f in files:
            check_qupath_geojson(f)
            check_tiatoolbox_geojson(f)


# ----------------------------------------------------------------------------------------- MoNuSeg-style
@pytest.mark.parametrize("fmt", FORMATS)
def test_monuseg_style_tiff_exports_to_every_format_without_a_class_map(fmt, monuseg, tmp_path, capsys):
    out = tmp_path / fmt
    assert _real(monuseg, out, "--format", fmt) == 0
    captured = capsys.readouterr()
    assert "taxonomy nucleus" in captured.out
    _consumer_check(fmt, out)
    tiles = list(read_dataset(out, fmt))
    assert len(tiles) == 9  # 3 x 3 whole 256-px tiles at 0.25 um/px in 1000 px at 0.252
    assert sum(t.n_nuclei for t in tiles) > 40
    assert all(t.taxonomy.names == ("nucleus",) for t in tiles)
    if fmt == "coco":  # category ids follow the dataset's taxonomy; names are always right
        assert json.loads((out / "taxonomy.json").read_text())["ids_follow"] == "nucleus"
        cats = json.loads((out / "annotations.json").read_text())["categories"]
        assert [(c["id"], c["name"]) for c in cats] == [(1, "nucleus")]
    if fmt in ("lizard", "pannuke", "consep"):
        # "nucleus" has no Lizard/PanNuke/CoNSeP class: one warning, and taxonomy.json says so.
        assert captured.err.count("warning:") >= 1 and "NOT" in captured.err
        record = json.loads((out / "taxonomy.json").read_text())
        assert record["ids_follow"] == "nucleus" and "nucleus" in record["note"]


def test_monuseg_style_consep_mat_types_equal_each_instance_class(monuseg, tmp_path):
    out = tmp_path / "consep"
    assert _real(monuseg, out, "--format", "consep") == 0
    seen = check_hovernet_mat(out, consep_loader=False)
    assert seen and all(set(classes.values()) <= {1} for classes in seen.values())
    assert sum(len(c) for c in seen.values()) > 40


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from wsi_cosynth.models.config import load_config
    from wsi_cosynth.models.cosynth import CosynthModel
    from wsi_cosynth.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = CosynthModel(load_config("tiny"), get_taxonomy("consep"), mpp=0.5, tile_size=32)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny", model, steps=0)


def test_synthetic_export_from_unclassified_points_needs_only_default_class(monuseg, tiny_model, tmp_path, capsys):
    base = ["export", "--slide", str(monuseg), "--model", str(tiny_model), "--format", "geojson", "--steps", "2",
            "--max-tiles", "2", "--batch-size", "2", "--threads", "1", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "--default-class" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "refused").exists()
    assert main([*base, "--out", str(tmp_path / "syn"), "--default-class", "other"]) == 0
    captured = capsys.readouterr()
    assert "given class 'other' (--default-class)" in captured.err
    tiles = list(read_dataset(tmp_path / "syn", "geojson"))
    assert len(tiles) == 2
    for f in (tmp_path / "syn").rglob("*.geojson"):
        check_tiatoolbox_geojson(f)
    # PanNuke: the tissue given reaches types.npy; the model's "other" has no PanNuke class -> warned.
    pannuke = [a if a != "geojson" else "pannuke" for a in base]
    assert main([*pannuke, "--out", str(tmp_path / "pn"), "--default-class", "other", "--tissue", "colon"]) == 0
    assert "NOT pannuke's own" in capsys.readouterr().err
    assert np.load(tmp_path / "pn" / "types.npy").tolist() == ["Colon", "Colon"]
    check_pannuke(tmp_path / "pn")


# ----------------------------------------------------------------------------------------- PNG / JPEG
@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_png_and_jpeg_regions_tile_and_export_with_slide_mpp(suffix, tmp_path, capsys):
    region = tmp_path / f"region.{suffix}"
    Image.fromarray(synthetic_he(600, 520, seed=2, tissue_fraction=1.0)).save(region)
    assert main(["tiles", "--slide", str(region), "--out", str(tmp_path / "nompp"), "--no-progress"]) == 2
    assert "--slide-mpp" in capsys.readouterr().err
    assert main(["tiles", "--slide", str(region), "--out", str(tmp_path / "tiles"), "--slide-mpp", "0.5",
                 "--mpp", "0.5", "--min-tissue", "0", "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet: no summary
    assert len(list((tmp_path / "tiles" / "tiles").glob("*.png"))) == 4  # 2 x 2 whole tiles
    centres = np.array([[60.0, 60.0], [300.0, 200.0], [450.0, 500.0]])
    _aperio_xml(tmp_path / "cells.xml", np.concatenate([centres, centres + 30]))
    assert _real(region, tmp_path / "coco", "--format", "coco", "--slide-mpp", "0.25",
                 "--annotations", str(tmp_path / "cells.xml")) == 0
    check_coco(tmp_path / "coco")
    assert len(list(read_dataset(tmp_path / "coco", "coco"))) == 4  # 600 x 520 at 0.25 -> 2 x 2 tiles of 256


# ----------------------------------------------------------------------------------------- padding
def test_region_smaller_than_a_tile_pads_or_says_so(tmp_path, capsys):
    small = synthetic_he(150, 200, seed=3, tissue_fraction=1.0)
    region = tmp_path / "small.png"
    Image.fromarray(small).save(region)
    _aperio_xml(tmp_path / "small.xml", np.array([[40.0, 40.0], [150.0, 100.0], [100.0, 60.0], [20.0, 120.0]]))
    assert _real(region, tmp_path / "refused", "--format", "coco", "--slide-mpp", "0.25") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "smaller than one 256 px tile" in err and "--pad" in err
    assert "tissue" not in err and not (tmp_path / "refused").exists()

    assert _real(region, tmp_path / "padded", "--format", "pannuke", "--slide-mpp", "0.25", "--pad", "0,0,0") == 0
    tiles = list(read_dataset(tmp_path / "padded", "pannuke"))
    assert len(tiles) == 1 and tiles[0].size == (256, 256) and tiles[0].n_nuclei == 4
    image = tiles[0].image
    np.testing.assert_array_equal(image[:150, :200], small)
    assert (image[150:] == 0).all() and (image[:, 200:] == 0).all()


def test_pad_covers_edge_tiles_with_the_colour(tmp_path):
    region = tmp_path / "edge.png"
    Image.fromarray(synthetic_he(300, 400, seed=3, tissue_fraction=1.0)).save(region)
    assert main(["tiles", "--slide", str(region), "--out", str(tmp_path / "t"), "--slide-mpp", "0.5", "--mpp", "0.5",
                 "--min-tissue", "0", "--pad", "#00ff00", "--quiet"]) == 0
    rows = json.loads((tmp_path / "t" / "index.json").read_text())["tiles"]
    assert len(rows) == 4  # 2 x 2 with padding; without it only the one whole tile
    edge = np.asarray(Image.open(tmp_path / "t" / "tiles" / f"{rows[-1]['name']}.png"))
    assert (edge[44:, :] == (0, 255, 0)).all() and (edge[:, 144:] == (0, 255, 0)).all()
    assert main(["tiles", "--slide", str(region), "--out", str(tmp_path / "bad"), "--slide-mpp", "0.5",
                 "--pad", "not-a-colour", "--quiet"]) == 2


# ----------------------------------------------------------------------------------------- GeoJSON
def _two_part_tile() -> LabelledTile:
    inst = np.zeros((32, 32), dtype=np.int32)
    inst[2:8, 2:8] = 1
    inst[20:24, 20:26] = 1  # a second, smaller part of nucleus 1
    inst[10:16, 12:20] = 2
    return LabelledTile(image=np.full((32, 32, 3), 200, np.uint8), instances=inst, classes=np.array([1, 2]),
                        taxonomy=get_taxonomy("consep"), provenance=Provenance(name="t0"))


def test_geojson_writes_one_polygon_per_nucleus_and_counts_fragments(tmp_path):
    writer = open_writer("geojson", tmp_path / "one", get_taxonomy("consep"))
    with writer:
        writer.add(_two_part_tile())
    assert any("1 fragment" in n for n in writer.notes)
    path = tmp_path / "one" / "tiles" / "t0.geojson"
    check_tiatoolbox_geojson(path)
    check_qupath_geojson(path)
    feats = json.loads(path.read_text())["features"]
    assert [f["geometry"]["type"] for f in feats] == ["Polygon", "Polygon"]
    assert feats[0]["properties"]["measurements"]["Area px^2"] == 36.0  # the largest part only

    with open_writer("geojson", tmp_path / "multi", get_taxonomy("consep"), multipolygon=True) as writer:
        writer.add(_two_part_tile())
    multi = tmp_path / "multi" / "tiles" / "t0.geojson"
    check_qupath_geojson(multi)  # QuPath reads MultiPolygon ...
    with pytest.raises(AssertionError, match="Invalid geometry type"):
        check_tiatoolbox_geojson(multi)  # ... TIAToolbox's DictionaryStore does not


def _consep_subset(tmp_path: Path, n: int = 12) -> Path:
    src = data_path("consep", "train")
    dst = tmp_path / "consep_subset"
    for sub in ("images", "inst", "type_mat"):
        (dst / sub).mkdir(parents=True)
    for img in sorted((src / "images").iterdir())[:n]:
        (dst / "images" / img.name).symlink_to(img)
        (dst / "inst" / f"{img.stem}.npy").symlink_to(src / "inst" / f"{img.stem}.npy")
        (dst / "type_mat" / f"{img.stem}.mat").symlink_to(src / "type_mat" / f"{img.stem}.mat")
    return dst


def test_consep_to_geojson_loads_under_tiatoolbox_rules(tmp_path):
    src = _consep_subset(tmp_path, 40)
    assert main(["convert", str(src), str(tmp_path / "gj"), "--from", "consep", "--to", "geojson", "--quiet"]) == 0
    files = sorted((tmp_path / "gj").rglob("*.geojson"))
    assert len(files) == 40
    for f in files:
        check_tiatoolbox_geojson(f)
        check_qupath_geojson(f)


# ----------------------------------------------------------------------------------------- class ids
LIZARD_OF_CONSEP = {1: 6, 2: 3, 3: 2, 4: 6}  # other -> connective (class map), inflammatory -> lymphocyte, ...


def test_consep_to_lizard_speaks_lizard_ids_when_classes_map(tmp_path, capsys):
    src = _consep_subset(tmp_path)
    source = {t.provenance.name: t for t in read_dataset(src, "consep")}
    assert main(["convert", str(src), str(tmp_path / "keep"), "--from", "consep", "--to", "lizard", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "'other'" in err and "consep" in err
    assert json.loads((tmp_path / "keep" / "taxonomy.json").read_text())["ids_follow"] == "consep"

    (tmp_path / "map.yaml").write_text("other: connective\n")
    assert main(["convert", str(src), str(tmp_path / "liz"), "--from", "consep", "--to", "lizard",
                 "--class-map", str(tmp_path / "map.yaml"), "--no-progress"]) == 0
    assert "NOT" not in capsys.readouterr().err
    check_lizard(tmp_path / "liz")
    assert json.loads((tmp_path / "liz" / "taxonomy.json").read_text())["ids_follow"] == "lizard"
    n = 0
    for name, tile in source.items():
        label = scipy.io.loadmat(tmp_path / "liz" / "labels" / f"{name}.mat")
        ids = np.squeeze(label["id"]).reshape(-1).tolist()
        classes = np.squeeze(label["class"]).reshape(-1)
        np.testing.assert_array_equal(label["inst_map"], tile.instances)
        for k, c in enumerate(tile.classes, start=1):
            assert classes[ids.index(k)] == LIZARD_OF_CONSEP[int(c)], (name, k)
            n += 1
    assert n > 100


def test_to_consep_mat_has_hovernet_keys_and_types_equal_classes(tmp_path):
    src = _consep_subset(tmp_path)
    assert main(["convert", str(src), str(tmp_path / "hv"), "--from", "consep", "--to", "consep", "--quiet"]) == 0
    seen = check_hovernet_mat(tmp_path / "hv", consep_loader=True)
    mat = scipy.io.loadmat(next((tmp_path / "hv" / "labels").glob("*.mat")))
    assert mat["inst_map"].dtype == np.int32 and mat["type_map"].dtype == np.int32
    assert mat["inst_type"].dtype == np.int32 and mat["inst_centroid"].dtype == np.float64
    back = {t.provenance.name: t for t in read_dataset(tmp_path / "hv", "consep")}
    for tile in read_dataset(src, "consep"):
        name = tile.provenance.name
        # HoVer-Net's consep loader (with its 7 -> 4 merge) sees exactly each instance's class.
        assert seen[name] == {k: int(c) for k, c in enumerate(tile.classes, start=1)}, name
        np.testing.assert_array_equal(back[name].classes, tile.classes)
        np.testing.assert_array_equal(back[name].instances, tile.instances)


def test_pannuke_types_carry_the_tissue(tmp_path, monuseg):
    src = _consep_subset(tmp_path, 3)
    assert main(["convert", str(src), str(tmp_path / "pn"), "--from", "consep", "--to", "pannuke", "--tissue", "colon",
                 "--quiet"]) == 0
    assert np.load(tmp_path / "pn" / "types.npy").tolist() == ["Colon"] * 3
    check_pannuke(tmp_path / "pn")
    assert _real(monuseg, tmp_path / "real", "--format", "pannuke", "--tissue", "breast", "--quiet") == 0
    assert set(np.load(tmp_path / "real" / "types.npy").tolist()) == {"Breast"}


# ----------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("command", ["export", "convert", "tiles", "train", "evaluate", "layouts extract", "layouts fit", "layouts sample"])
def test_every_long_command_has_no_progress_and_quiet(command, capsys):
    with pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    text = capsys.readouterr().out
    assert "--no-progress" in text and "--quiet" in text


# ----------------------------------------------------------------------------------------- repairs
def test_make_valid_repairs_are_reported_next_to_the_dataset(tmp_path, capsys):
    import csv

    region = tmp_path / "r.png"
    Image.fromarray(synthetic_he(256, 256, seed=6, tissue_fraction=1.0)).save(region)

    def feature(ring):
        return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "detection"}}

    square = [[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]]
    bowtie = [[100, 100], [120, 120], [120, 100], [100, 120], [100, 100]]  # self-intersecting
    (tmp_path / "r.geojson").write_text(json.dumps({"type": "FeatureCollection",
                                                    "features": [feature(square), feature(bowtie)]}))
    assert _real(region, tmp_path / "out", "--format", "coco", "--slide-mpp", "0.25") == 0
    assert "repaired with make_valid" in capsys.readouterr().err
    with open(tmp_path / "out" / "repairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["index"] == "1"
    assert float(rows[0]["area_before_px"]) == 0.0 and float(rows[0]["area_after_px"]) == pytest.approx(200.0)
    assert float(rows[0]["x_level0"]) == pytest.approx(110.0)


def test_rounding_that_makes_an_outline_touch_itself_is_repaired():
    import shapely

    from wsi_cosynth.exporters.geojson import nucleus_geometry

    # Two notches whose tips are 0.003 px apart: valid as given, self-touching once rounded to 0.01.
    pinched = shapely.Polygon([(0, 0), (4, 0), (2, 1.999), (4, 4), (0, 4), (2, 2.002), (0, 0)])
    assert pinched.is_valid
    geometry, _ = nucleus_geometry([pinched], (0.0, 0.0), 1.0)
    shape = shapely.geometry.shape(geometry)
    assert geometry["type"] == "Polygon" and shape.is_valid and shape.area > 0
    assert all(round(c, 2) == c for ring in geometry["coordinates"] for xy in ring for c in xy)


def test_real_monusac_slide_geojson_loads_under_tiatoolbox_and_qupath_rules(tmp_path):
    slide = data_path("monusac", "A9K0_1.svs")
    assert main(["export", "--source", "real", "--slide", str(slide), "--format", "geojson", "--mpp", "0.25",
                 "--out", str(tmp_path / "gj"), "--quiet"]) == 0
    files = sorted((tmp_path / "gj").rglob("*.geojson"))
    assert files
    for f in files:
        check_tiatoolbox_geojson(f)
        check_qupath_geojson(f)
