"""Point-guided watershed and baselines on touching nuclei, plus bad input."""

import numpy as np
import pytest

from wsi_cosynth.errors import CosynthError
from wsi_cosynth.instances import separate_connected_components, separate_instances, separate_marker_free
from wsi_cosynth.layouts import distance_map, nucleus_anchors
from wsi_cosynth.metrics.instance_metrics import mean_instance_dice


def touching():
    rr, cc = np.mgrid[:40, :60]
    inst = np.zeros((40, 60), np.int32)
    for i, (y, x, r) in enumerate([(20, 15, 9), (20, 31, 9), (12, 45, 6)], start=1):
        inst[((rr - y) ** 2 + (cc - x) ** 2 <= r * r) & (inst == 0)] = i
    return inst


def test_watershed_recovers_touching_nuclei():
    inst = touching()
    sem = np.array([0, 2, 3, 3])[inst]
    _, xy = nucleus_anchors(inst)
    pred, cls = separate_instances(distance_map(inst), sem, xy, np.array([2, 3, 3]))
    assert pred.max() == 3
    assert mean_instance_dice(inst, pred) > 0.97
    assert cls.tolist() == [2, 3, 3]
    cc, cc_cls = separate_connected_components(sem)
    assert cc.max() == 2  # nuclei 1 and 2 touch: one blob; nucleus 3 apart
    mf, _ = separate_marker_free(distance_map(inst), sem)
    assert mf.max() == 3


def test_class_fallback_and_unmarked_component():
    inst = touching()
    sem = np.array([0, 2, 3, 1])[inst]
    sem[2:5, 2:5] = 4  # a blob with no point
    _, xy = nucleus_anchors(inst)
    pred, cls = separate_instances(distance_map(inst), sem, xy, None)
    assert cls.tolist() == [2, 3, 1, 4]  # majority classes; the unmarked blob kept last
    pred2, _ = separate_instances(distance_map(inst), sem, xy, None, unmarked="drop")
    assert pred2.max() == 3 and (pred2[2:5, 2:5] == 0).all()


def test_point_on_background_snaps_or_drops():
    inst = touching()
    sem = (inst > 0).astype(np.int64)
    _, xy = nucleus_anchors(inst)
    xy = np.vstack([xy, [[58.5, 38.5]]])  # far from any nucleus: dropped
    pred, _ = separate_instances(distance_map(inst), sem, xy)
    assert pred.max() == 3


def test_bad_input():
    inst = touching()
    d, sem = distance_map(inst), (inst > 0).astype(int)
    with pytest.raises(CosynthError, match="outside"):
        separate_instances(d, sem, np.array([[70.0, 5.0]]))
    with pytest.raises(CosynthError, match="shape"):
        separate_instances(d[:5], sem, np.zeros((0, 2)))
    with pytest.raises(CosynthError, match="point_classes"):
        separate_instances(d, sem, np.array([[5.0, 5.0]]), np.array([1, 2]))
    empty, cls = separate_instances(d, sem, np.zeros((0, 2)), unmarked="drop")
    assert empty.max() == 0 and len(cls) == 0


def test_real_tile(consep_dir):
    from wsi_cosynth.exporters import read_dataset
    from wsi_cosynth.layouts import layout_from_tile

    tile = next(iter(read_dataset(consep_dir, "consep")))
    lay = layout_from_tile(tile)
    pred, cls = separate_instances(distance_map(tile.instances), tile.semantic(), lay.xy_tile, lay.classes)
    assert mean_instance_dice(tile.instances, pred) > 0.97


def test_instance_centroids_are_pixel_centred_and_nan_for_missing_ids():
    from wsi_cosynth.instances import instance_centroids

    inst = np.zeros((6, 8), np.int32)
    inst[0:2, 0:4] = 1  # x 0..4, y 0..2: centre (2, 1)
    inst[5, 7] = 3  # one pixel: centre (7.5, 5.5); id 2 has no pixels
    xy = instance_centroids(inst)
    assert xy.shape == (3, 2)
    np.testing.assert_allclose(xy[[0, 2]], [[2.0, 1.0], [7.5, 5.5]])
    assert np.isnan(xy[1]).all()
    assert instance_centroids(inst, 1).shape == (1, 2)
    assert instance_centroids(np.zeros((4, 4), np.int32)).shape == (0, 2)
