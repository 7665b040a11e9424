"""Conversion fast paths give the same outputs: counted ids and table relabelling equal the
sorted (np.unique / searchsorted) results; COCO annotations encoded in the background thread are
the strings the inline encoder wrote, in order, and decode to the instance masks; an encoding
error leaves no output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wsi_cosynth import records
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.exporters import coco, open_writer, read_dataset
from wsi_cosynth.exporters._rle import uncompressed_rles
from wsi_cosynth.records import LabelledTile, Provenance, present_ids, relabel_contiguous
from wsi_cosynth.taxonomy import get_taxonomy


def _sorted_reference(inst, classes_by_id=None):
    old = np.unique(inst)
    old = old[old > 0]
    new = np.zeros(inst.shape, dtype=np.int32)
    fg = inst > 0
    new[fg] = np.searchsorted(old, inst[fg]).astype(np.int32) + 1
    cls = np.asarray(classes_by_id)[old] if classes_by_id is not None else np.zeros(len(old), np.int64)
    return new, cls.astype(np.int64), old


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.uint32])
def test_counted_ids_and_lookup_relabel_equal_the_sorted_path(dtype):
    rng = np.random.default_rng(5)
    inst = rng.choice([0, 0, 0, 3, 17, 900, 901, 65_000], size=(64, 48)).astype(dtype)
    by_id = rng.integers(1, 5, size=65_001)
    new, cls = relabel_contiguous(inst, by_id)
    ref_new, ref_cls, ref_ids = _sorted_reference(inst.astype(np.int64), by_id)
    assert new.dtype == np.int32 and np.array_equal(new, ref_new) and np.array_equal(cls, ref_cls)
    assert np.array_equal(present_ids(inst), ref_ids)


def test_huge_or_negative_ids_take_the_sorted_path(monkeypatch):
    inst = np.array([[0, -4, 7], [2**40, 7, 0]], dtype=np.int64)
    new, _ = relabel_contiguous(inst)
    assert np.array_equal(new, [[0, 0, 1], [2, 1, 0]])
    monkeypatch.setattr(records, "_LUT_MIN_IDS", 0)  # force the table off for small maps too
    inst = np.array([[0, 5], [5, 100]], dtype=np.int32)
    assert np.array_equal(relabel_contiguous(inst)[0], [[0, 1], [1, 2]])


def test_labelled_tile_still_rejects_gaps():
    inst = np.array([[0, 1], [3, 3]], dtype=np.int32)
    with pytest.raises(CosynthError, match="contiguous"):
        LabelledTile(np.zeros((2, 2, 3), np.uint8), inst, np.array([1, 1, 1]), get_taxonomy("consep"), Provenance("t"))


def test_coco_annotations_are_pycocotools_encodings_in_order(consep_dir, tmp_path):
    tiles = [t for _, t in zip(range(40), read_dataset(consep_dir, "consep"))]
    with open_writer("coco", tmp_path / "c", get_taxonomy("consep"), segmentation="rle") as w:
        for t in tiles:
            w.add(t)
    data = json.loads((tmp_path / "c" / "annotations.json").read_text())
    expected = []
    for image_id, t in enumerate(tiles, start=1):
        # What the writer computed inline before encoding moved to a thread: the same strings.
        counts = uncompressed_rles(t.instances, t.n_nuclei)
        rles = mask_utils.frPyObjects([{"size": list(t.size), "counts": c} for c in counts], *t.size) if counts else []
        for k in range(1, t.n_nuclei + 1):
            ref = mask_utils.encode(np.asfortranarray((t.instances == k).astype(np.uint8)))
            expected.append((image_id, int(t.classes[k - 1]), rles[k - 1]["counts"].decode("ascii"),
                             float(mask_utils.area(ref)), [float(v) for v in mask_utils.toBbox(ref)]))
            assert np.array_equal(mask_utils.decode(rles[k - 1]), t.instances == k)
    got = [(a["image_id"], a["category_id"], a["segmentation"]["counts"], a["area"], a["bbox"]) for a in data["annotations"]]
    assert got == expected and [a["id"] for a in data["annotations"]] == list(range(1, len(expected) + 1))
    assert len(expected) > 500


def test_an_encoding_error_aborts_the_whole_output(consep_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = coco.counts_from_runs

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise CosynthError("boom while encoding")
        return real(*args)

    monkeypatch.setattr(coco, "counts_from_runs", failing)
    with pytest.raises(CosynthError, match="boom"):
        with open_writer("coco", tmp_path / "c", get_taxonomy("consep")) as w:
            for _, t in zip(range(30), read_dataset(consep_dir, "consep")):
                w.add(t)
    assert not (tmp_path / "c").exists()


def test_boxes_and_areas_from_runs_match_the_mask_pass():
    """Including instances whose column-major runs wrap past the bottom row into the next column."""
    from wsi_cosynth.exporters._rle import boxes_and_areas_from_runs, instance_runs
    from wsi_cosynth.geometry import instance_bboxes

    rng = np.random.default_rng(3)
    for shape, n in (((7, 5), 4), ((16, 16), 9), ((1, 9), 3), ((9, 1), 3)):
        for _ in range(20):
            inst = rng.integers(0, n + 1, shape).astype(np.int32)
            inst[0, 0] = n + 1  # one id absent in between: its row stays zero
            inst[inst == n // 2 + 1] = 0
            top = int(inst.max())
            boxes, areas = boxes_and_areas_from_runs(*instance_runs(inst), top, shape[0])
            assert np.array_equal(boxes, instance_bboxes(inst, top))
            assert np.array_equal(areas, np.bincount(inst.ravel(), minlength=top + 1)[1:])
    wrap = np.zeros((4, 3), np.int32)
    wrap[3, 0] = wrap[0, 1] = 1  # one run: bottom of column 0, top of column 1
    assert len(instance_runs(wrap)[0]) == 1
    assert boxes_and_areas_from_runs(*instance_runs(wrap), 1, 4)[0].tolist() == [[0, 4, 0, 2]]
