"""Per-tile instance maps and points from an annotation table."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point, Polygon, box

from wsi_cosynth.annotations import make_table
from wsi_cosynth.annotations.labels import require_outlines, tile_instances, tile_points
from wsi_cosynth.errors import CosynthError


def test_instances_clipped_at_border_contiguous_and_scaled():
    table = make_table([box(10, 10, 30, 30), box(-10, 40, 10, 60), box(500, 500, 510, 510), Point(50, 50)],
                       ["a", "b", "a", "a"])
    idx = table.query_nuclei((0, 0, 128, 128))
    inst, kept = tile_instances(table, idx, (0, 0), 2.0, (64, 64))
    assert list(kept) == [0, 1] and inst.max() == 2
    assert (inst == 1).sum() == 100 and (inst[5:15, 5:15] == 1).all()  # 20x20 level-0 px at scale 2
    assert (inst == 2).sum() == 5 * 10 and (inst[20:30, 0:5] == 2).all()  # clipped at x = 0


def test_smaller_nucleus_drawn_over_larger_and_swallowed_dropped():
    table = make_table([box(0, 0, 20, 20), box(5, 5, 10, 10), box(0, 0, 20, 20)], ["big", "small", "dup"])
    inst, kept = tile_instances(table, np.arange(3), (0, 0), 1.0, (32, 32))
    # One of the two identical big squares is fully covered by the other and drops out.
    assert len(kept) == 2 and inst.max() == 2
    small_id = int(np.flatnonzero(kept == 1)[0]) + 1
    assert (inst[5:10, 5:10] == small_id).all()


def test_points_inside_tile_and_point_only_table():
    table = make_table([Point(5, 5), Point(70, 10), Point(-1, 3)], ["x", "y", "z"])
    xy, kept = tile_points(table, np.arange(3), (0, 0), 2.0, (32, 32))
    np.testing.assert_allclose(xy, [[2.5, 2.5]])
    assert list(kept) == [0]
    with pytest.raises(CosynthError, match="only points"):
        require_outlines(table)
    require_outlines(make_table([Polygon([(0, 0), (1, 0), (1, 1)])], ["x"]))
