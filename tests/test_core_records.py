"""Records, taxonomy mapping by name, geometry round trips and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import MultiPolygon
from skimage.draw import ellipse

from wsi_cosynth import CosynthError, LabelledTile, Layout, Provenance, get_taxonomy, relabel_contiguous
from wsi_cosynth.atomic import atomic_path
from wsi_cosynth.geometry import instance_bboxes, mask_to_polygons, rasterize_polygon
from wsi_cosynth.taxonomy import class_mapping, load_class_map, map_name

CONSEP = get_taxonomy("consep")


def _tile(instances: np.ndarray, classes) -> LabelledTile:
    image = np.zeros(instances.shape + (3,), np.uint8)
    return LabelledTile(image, instances, np.asarray(classes), CONSEP, Provenance("t"))


def test_labelled_tile_validates_shapes_ids_and_classes():
    inst = np.zeros((8, 8), np.int32)
    inst[1:3, 1:3] = 1
    inst[5:7, 5:7] = 2
    tile = _tile(inst, [1, 4])
    assert tile.n_nuclei == 2
    assert tile.semantic()[6, 6] == 4 and tile.semantic()[0, 0] == 0
    with pytest.raises(CosynthError, match="classes"):
        _tile(inst, [1])
    with pytest.raises(CosynthError, match="not in taxonomy"):
        _tile(inst, [1, 5])
    gap = inst.copy()
    gap[gap == 2] = 3
    with pytest.raises(CosynthError, match="contiguous"):
        _tile(gap, [1, 2, 3])
    with pytest.raises(CosynthError, match="does not match"):
        LabelledTile(np.zeros((8, 9, 3), np.uint8), inst, np.array([1, 1]), CONSEP, Provenance("t"))


def test_instance_ids_beyond_uint16_survive():
    n = 70_000
    inst = np.arange(1, n + 1, dtype=np.int64).reshape(350, 200)
    new, _ = relabel_contiguous(inst * 3)
    tile = _tile(new, np.ones(n, dtype=np.int64))
    assert tile.instances.dtype == np.int32 and int(tile.instances.max()) == n


def test_relabel_contiguous_keeps_classes_with_their_ids():
    inst = np.array([[0, 7, 7], [3, 0, 9]])
    new, classes = relabel_contiguous(inst, {3: 2, 7: 1, 9: 4})
    assert new.tolist() == [[0, 2, 2], [1, 0, 3]]
    assert classes.tolist() == [2, 1, 4]


def test_layout_rejects_points_outside_the_tile():
    with pytest.raises(CosynthError, match="outside"):
        Layout(np.array([[10.0, 300.0]]), np.array([1]), (256, 256), CONSEP, Provenance("l"))
    layout = Layout(np.array([[10.0, 20.0]]), np.array([3]), (256, 256), CONSEP, Provenance("l", tissue="colon"))
    assert len(layout) == 1 and layout.tissue == "colon"


def test_mapping_by_name_uses_user_map_then_names_then_aliases(tmp_path):
    lut = class_mapping(get_taxonomy("lizard"), CONSEP)
    # neutrophil, lymphocyte, plasma, eosinophil -> inflammatory; connective -> spindle.
    assert lut.tolist() == [0, 2, 3, 2, 2, 2, 4]
    with pytest.raises(CosynthError, match="'other'"):
        class_mapping(CONSEP, get_taxonomy("pannuke"))
    path = tmp_path / "map.yaml"
    path.write_text("other: dead\nspindle: connective\n")
    lut = class_mapping(CONSEP, get_taxonomy("pannuke"), load_class_map(path))
    assert lut.tolist() == [0, 4, 2, 5, 3]
    with pytest.raises(CosynthError, match="unknown class 'nope'"):
        map_name("x", CONSEP, {"x": "nope"})


def test_mask_polygon_round_trip_is_exact():
    rng = np.random.default_rng(0)
    for _ in range(25):
        mask = np.zeros((40, 50), bool)
        rr, cc = ellipse(20, 25, rng.uniform(2, 15), rng.uniform(2, 15), shape=mask.shape, rotation=rng.uniform(0, 3))
        mask[rr, cc] = True
        mask[rng.integers(0, 40, 4), rng.integers(0, 50, 4)] ^= True
        polygons = mask_to_polygons(mask)
        assert all(p.is_valid for p in polygons)
        assert sum(p.area for p in polygons) == mask.sum()
        np.testing.assert_array_equal(rasterize_polygon(MultiPolygon(polygons), mask.shape), mask)


def test_polygons_live_on_the_pixel_corner_grid():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 2:4] = True
    (square,) = mask_to_polygons(mask, offset_xy=(100, 200))
    assert square.bounds == (102.0, 201.0, 104.0, 205.0)
    back = rasterize_polygon(square, (3, 3), offset_xy=(100, 200), scale=2.0)
    assert back.tolist() == [[False, True, False], [False, True, False], [False, True, False]]
    bboxes = instance_bboxes(mask.astype(np.int32))
    assert bboxes.tolist() == [[1, 5, 2, 4]]


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "done.txt").write_text("ok")
    assert (target / "done.txt").read_text() == "ok"
