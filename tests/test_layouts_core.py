"""Distance maps, rasterisation, extraction and bad input."""

import numpy as np
import pytest

from wsi_cosynth.errors import CosynthError
from wsi_cosynth.layouts import (
    distance_map, layout_from_points, layout_from_tile, nucleus_anchors, point_channels, point_collisions,
    rasterize_points,
)
from wsi_cosynth.records import LabelledTile, Provenance
from wsi_cosynth.taxonomy import get_taxonomy

TAX = get_taxonomy("consep")


def test_distance_map_properties():
    inst = np.zeros((20, 20), np.int32)
    inst[3:8, 3:8] = 1           # 5x5: centroid at a pixel centre
    inst[10:12, 10:18] = 2       # elongated
    inst[15, 15] = 3             # single pixel
    d = distance_map(inst)
    assert d.dtype == np.float32 and d.shape == inst.shape
    assert d.min() >= 0 and d.max() <= 1
    assert (d[inst == 0] == 0).all()
    assert d[5, 5] == 1.0 and d[15, 15] == 1.0
    assert d[3, 3] == pytest.approx(0.0, abs=1e-6)  # farthest pixel of nucleus 1
    for i in (1, 2):  # decreasing away from the anchor
        m = inst == i
        assert d[m].max() >= 0.8 - 1e-6  # peak < 1 when the centroid is a pixel corner


def test_concave_nucleus_anchor_is_inside():
    inst = np.zeros((30, 30), np.int32)
    inst[5:25, 5:9] = 1   # a "C": centroid falls in the hole
    inst[5:9, 5:25] = 1
    inst[21:25, 5:25] = 1
    ids, xy = nucleus_anchors(inst)
    r, c = int(xy[0, 1]), int(xy[0, 0])
    assert inst[r, c] == 1
    d = distance_map(inst)
    assert d[r, c] == d.max() == pytest.approx(1.0)


def test_rasterize_axis_order_and_collisions():
    xy = np.array([[3.7, 1.2], [3.1, 1.9], [0.0, 4.99]])
    out = rasterize_points(xy, np.array([2, 3, 1]), (5, 6))
    assert out[1, 3] == 2  # lowest index wins the shared pixel (row floor(y)=1, col floor(x)=3)
    assert out[4, 0] == 1 and out.sum() == 3
    assert point_collisions(xy, (5, 6)) == 1
    ch = point_channels(xy, np.array([2, 3, 1]), (5, 6), 4)
    assert ch.shape == (4, 5, 6) and ch.dtype == np.float32
    assert ch[1, 1, 3] == 1 and ch[0, 4, 0] == 1 and ch.sum() == 2


def test_rasterize_bad_input():
    with pytest.raises(CosynthError, match="outside"):
        rasterize_points(np.array([[6.0, 1.0]]), np.array([1]), (5, 6))
    with pytest.raises(CosynthError, match="class id"):
        rasterize_points(np.array([[1.0, 1.0]]), np.array([0]), (5, 6))
    with pytest.raises(CosynthError, match="n_classes"):
        point_channels(np.array([[1.0, 1.0]]), np.array([5]), (5, 6), 4)
    assert rasterize_points(np.zeros((0, 2)), np.zeros(0, int), (5, 6)).sum() == 0


def test_layout_from_tile_and_points():
    inst = np.zeros((16, 16), np.int32)
    inst[2:5, 2:5] = 1
    inst[8:12, 10:14] = 2
    tile = LabelledTile(np.zeros((16, 16, 3), np.uint8), inst, np.array([3, 4]), TAX, Provenance("t"))
    lay = layout_from_tile(tile)
    assert np.allclose(lay.xy_tile, [[3.5, 3.5], [12.0, 10.0]])  # (x, y), pixel centres at +0.5
    assert lay.classes.tolist() == [3, 4]
    named = layout_from_points([[1, 1], [2, 2]], ["lymphocyte", "tumor"], (8, 8), TAX)
    assert named.classes.tolist() == [2, 3]  # mapped by name through aliases
    with pytest.raises(CosynthError, match="unknown-cell"):
        layout_from_points([[1, 1]], ["unknown-cell"], (8, 8), TAX)
    with pytest.raises(CosynthError, match="outside"):
        layout_from_points([[9, 1]], ["epithelial"], (8, 8), TAX)
    assert len(layout_from_points([[9, 1]], ["epithelial"], (8, 8), TAX, clip=True)) == 0


def test_real_tiles_distance_and_layout(consep_dir):
    from wsi_cosynth.exporters import read_dataset

    tile = next(iter(read_dataset(consep_dir, "consep")))
    d = distance_map(tile.instances)
    lay = layout_from_tile(tile)
    assert len(lay) == tile.n_nuclei
    r = np.floor(lay.xy_tile[:, 1]).astype(int)
    c = np.floor(lay.xy_tile[:, 0]).astype(int)
    assert (tile.instances[r, c] == np.arange(1, len(lay) + 1)).all()  # every point on its nucleus
    assert 0 <= d.min() and d.max() <= 1 and (d[tile.instances == 0] == 0).all()
