"""Readers on the real third-party files in ../shared/data/formats (and the NuCLS / CoNSeP tiles)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.io

from wsi_cosynth.errors import CosynthError
from wsi_cosynth.exporters import READ_FORMATS, WRITE_FORMATS, count_tiles, read_dataset
from wsi_cosynth.exporters.coco import read_coco_labels
from wsi_cosynth.exporters.consep import read_consep_mat
from wsi_cosynth.exporters.geojson import classification_name, read_geojson_nuclei
from wsi_cosynth.exporters.hovernet_json import nuclei_to_instances
from wsi_cosynth.exporters.lizard import read_lizard_label
from wsi_cosynth.exporters.pannuke import masks_to_instances
from wsi_cosynth.taxonomy import get_taxonomy


def test_registry_names():
    assert set(WRITE_FORMATS) <= set(READ_FORMATS)
    assert set(READ_FORMATS) == {"consep", "cellvit", "hovernet-json", "lizard", "pannuke", "coco", "geojson"}


def test_consep_reader_matches_files(consep_dir):
    assert count_tiles(consep_dir, "consep") == 432
    tile = next(read_dataset(consep_dir, "consep"))
    raw = np.load(consep_dir / "inst" / "train_10_000.npy")
    types = scipy.io.loadmat(consep_dir / "type_mat" / "train_10_000.mat")["inst_type"].ravel()
    ids = np.unique(raw)[1:]
    assert tile.n_nuclei == len(ids) == len(types) == 68
    # Row k of inst_type belongs to the k-th smallest id.
    for k, old in enumerate(ids[:10]):
        assert np.array_equal(tile.instances == k + 1, raw == old)
        assert tile.classes[k] == types[k]
    assert tile.taxonomy == get_taxonomy("consep")


def test_consep_to_other_taxonomy_by_name(consep_dir):
    tile = next(read_dataset(consep_dir, "consep", taxonomy=get_taxonomy("pannuke"),
                             class_map={"other": "dead", "spindle": "connective"}))
    assert tile.taxonomy.key == "pannuke"
    with pytest.raises(CosynthError, match="'other'"):
        next(read_dataset(consep_dir, "consep", taxonomy=get_taxonomy("pannuke")))


def test_consep_style_mat(formats_dir):
    path = formats_dir / "hovernet" / "cellseg_models_patch1_consep_style_gt.mat"
    inst, classes = read_consep_mat(path)
    mat = scipy.io.loadmat(path)
    ids = np.unique(mat["inst_map"])[1:]
    assert inst.max() == len(ids) == 20
    # Original CoNSeP codes 2, 3, 5 merge to 2 inflammatory, 3 epithelial, 4 spindle.
    merged = {1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 4, 7: 4}
    assert classes.tolist() == [merged[int(t)] for t in mat["inst_type"].ravel()]
    bbox = mat["inst_bbox"]
    for k in range(20):
        rr, cc = np.nonzero(inst == k + 1)
        assert (rr.min(), rr.max() + 1, cc.min(), cc.max() + 1) == tuple(bbox[k])
    # The HoVer-Net tile-mode .mat (inst_uid form) gives the same nuclei.
    inst2, classes2 = read_consep_mat(formats_dir / "hovernet" / "DERIVED_hovernet_tile_output.mat")
    assert np.array_equal(inst, inst2) and np.array_equal(classes, classes2)


def test_hovernet_json_contours(formats_dir):
    data = json.loads((formats_dir / "hovernet" / "DERIVED_hovernet_tile_output.json").read_text())
    from pathlib import Path

    inst, types = nuclei_to_instances(data["nuc"], (256, 256), Path("x.json"))
    ref, _ = read_consep_mat(formats_dir / "hovernet" / "cellseg_models_patch1_consep_style_gt.mat")
    assert np.array_equal(inst, ref)  # cv2-style fill of the contours restores the masks
    assert types.tolist() == [int(data["nuc"][k]["type"]) for k in sorted(data["nuc"], key=int)]


def test_cellvit_nucls(nucls_dir):
    tiles = list(read_dataset(nucls_dir, "cellvit"))
    assert len(tiles) == count_tiles(nucls_dir, "cellvit") == 15
    assert tiles[0].taxonomy == get_taxonomy("nucls")
    raw = np.load(nucls_dir / "test" / "labels" / "test_1.npy", allow_pickle=True).item()
    t = next(t for t in tiles if t.provenance.name == "test_1")
    assert t.n_nuclei == len(np.unique(raw["inst_map"])) - 1
    assert np.array_equal(t.semantic() > 0, raw["inst_map"] > 0)


def test_lizard_synthetic_label_rows_by_id(formats_dir):
    path = formats_dir / "lizard" / "SYNTHETIC_lizard_label_example.mat"
    inst, classes = read_lizard_label(path)
    mat = scipy.io.loadmat(path)
    ids = mat["id"].ravel().tolist()
    raw = mat["inst_map"]
    for k, old in enumerate(np.unique(raw)[1:]):
        assert np.array_equal(inst == k + 1, raw == old)
        assert classes[k] == mat["class"].ravel()[ids.index(int(old))]


def test_pannuke_synthetic_masks(formats_dir):
    masks = np.load(formats_dir / "pannuke" / "SYNTHETIC_masks.npy")
    inst, classes = masks_to_instances(masks[0])
    n = len(np.unique(masks[0, ..., :5])) - 1
    assert inst.max() == n and len(classes) == n
    for k in range(n):
        ch = np.unique(np.nonzero(masks[0, ..., :5] * (inst == k + 1)[..., None])[2])
        assert ch.tolist() == [classes[k] - 1]


QUPATH = [
    ("DERIVED_qupath05_style_detections.geojson", 20, "detection", "Spindle"),
    ("paquo_2021_test_legacy_v02_annotation.json", 1, "annotation", "Tumor"),
    ("qupath_TestGsonTools_measurements_feature.nonstrict.json", 1, "annotation", "unclassified"),
    ("qupath_test_polygon.geojson", 1, "annotation", "unclassified"),
    ("histoqc_holed_annotation.geojson", 1, None, None),
    ("wsinfer_issue178_legacy_v02_style_feature.json", 1, "tile", "unclassified"),
    ("wsinfer_issue178_qupath_exported_tile_feature.json", 1, "tile", "unclassified"),
]


@pytest.mark.parametrize("name,n,otype,cls", QUPATH)
def test_qupath_files(formats_dir, name, n, otype, cls):
    table = read_geojson_nuclei(formats_dir / "qupath" / name)
    assert len(table) == n
    if otype:
        assert table.object_types[0] == otype
    if cls:
        assert table.class_names[0] == cls
    assert all(g.is_valid or g.buffer(0).area > 0 for g in table.geometries)


def test_qupath_geometry_values(formats_dir):
    holed = read_geojson_nuclei(formats_dir / "qupath" / "histoqc_holed_annotation.geojson").geometries[0]
    assert holed.geom_type == "Polygon" and len(holed.interiors) >= 1
    poly = read_geojson_nuclei(formats_dir / "qupath" / "qupath_test_polygon.geojson").geometries[0]
    assert poly.geom_type == "MultiPolygon"
    legacy = read_geojson_nuclei(formats_dir / "qupath" / "paquo_2021_test_legacy_v02_annotation.json")
    assert legacy.ids == ["PathAnnotationObject"]
    assert legacy.geometries[0].bounds == (1000.0, 1300.0, 1120.0, 1430.0)


def test_qupath_classifications(formats_dir):
    derived = json.loads((formats_dir / "qupath" / "qupath_test_derived-class.json").read_text())
    assert classification_name(derived) == "First: Second: Third: Fourth"
    legacy = json.loads((formats_dir / "qupath" / "qupath_test_derived-class-legacy.json").read_text())
    assert classification_name(legacy) == "First-legacy: Second-legacy: Third-legacy: Fourth-legacy"
    assert classification_name("Tumor") == "Tumor"


def test_cellvitpp_multipoint(formats_dir):
    path = formats_dir / "qupath" / "cellvitpp_JP2K-33003-2_cell_detection.geojson"
    raw = json.loads(path.read_text())
    table = read_geojson_nuclei(path)
    n_points = sum(len(f["geometry"]["coordinates"]) for f in raw)
    assert len(raw) == 3 and len(table) == n_points > 30_000
    assert table.is_point.all()
    names = {f["properties"]["classification"]["name"] for f in raw}
    assert set(table.class_names) == names
    first = raw[0]["geometry"]["coordinates"][0]
    assert table.xy[0].tolist() == [float(first[0]), float(first[1])]


def test_point_only_geojson_is_refused_for_tiles(tmp_path, formats_dir, consep_dir):
    import shutil

    (tmp_path / "images").mkdir()
    shutil.copy(consep_dir / "images" / "train_10_000.jpg", tmp_path / "images" / "t.jpg")
    pts = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[10, 10], [20, 20]]},
         "properties": {"objectType": "detection", "classification": {"name": "Tumor", "color": [1, 2, 3]}}}]}
    (tmp_path / "t.geojson").write_text(json.dumps(pts))
    with pytest.raises(CosynthError, match="point feature"):
        list(read_dataset(tmp_path, "geojson"))


COCO_SEG = ["DERIVED_nuclei_rle.json", "DERIVED_nuclei_polygons.json", "sahi_terrain1_coco.json",
            "cocoapi_instances_val2014_fakesegm100_results.json"]


@pytest.mark.parametrize("name", COCO_SEG)
def test_coco_third_party_labels(formats_dir, name):
    import pycocotools.mask as mask_utils

    path = formats_dir / "coco" / name
    data = json.loads(path.read_text())
    anns = data if isinstance(data, list) else data["annotations"]
    labels = list(read_coco_labels(path))
    assert labels and sum(lab.instances.max() for lab in labels) > 0
    if name == "DERIVED_nuclei_rle.json":  # lossless: every annotation's mask is an instance
        (lab,) = labels
        for ann in anns:
            m = mask_utils.decode(ann["segmentation"]).astype(bool)
            ids = np.unique(lab.instances[m])
            assert len(ids) == 1 and (lab.instances == ids[0]).sum() == m.sum()
    if name == "DERIVED_nuclei_polygons.json":
        rle = list(read_coco_labels(formats_dir / "coco" / "DERIVED_nuclei_rle.json"))[0]
        assert labels[0].instances.max() == rle.instances.max() == 20
        assert labels[0].taxonomy.names == rle.taxonomy.names


def test_coco_nan_free_measurement_file_parses(formats_dir):
    table = read_geojson_nuclei(formats_dir / "qupath" / "qupath_TestGsonTools_measurements_feature.nonstrict.json")
    assert len(table) == 1 and not math.isnan(table.geometries[0].area)
