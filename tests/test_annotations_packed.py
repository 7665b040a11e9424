"""Packed annotation storage and the streaming GeoJSON reader: same table, bounded parse memory."""

from __future__ import annotations

import json
import tracemalloc
import warnings

import numpy as np
import pytest
import shapely

from wsi_cosynth.annotations import load_annotations, make_table
from wsi_cosynth.annotations import geojson_stream, qupath
from wsi_cosynth.annotations.packed import PackedGeometries
from wsi_cosynth.annotations.table import AnnotationWarning
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.exporters.geojson import read_geojson_nuclei


def _ellipse(x, y, rx=9.0, ry=6.0, n=16):
    t = np.linspace(0, 2 * np.pi, n + 1)[:-1]
    ring = np.stack([x + rx * np.cos(t), y + ry * np.sin(t)], axis=1).round(2).tolist()
    return ring + [ring[0]]


def _qupath_text(n: int, *, nan: bool = True, bow_ties: int = 0) -> str:
    """A QuPath-style detection export; measurements carry bare NaN as QuPath 0.4 writes them."""
    feats = []
    for i in range(n):
        x, y = 20 + 32 * (i % 100), 20 + 32 * (i // 100)
        ring = [[x, y], [x + 10, y + 10], [x + 10, y], [x, y + 10], [x, y]] if i < bow_ties else _ellipse(x, y)
        feats.append(json.dumps({"type": "Feature", "id": f"id-{i}", "geometry": {"type": "Polygon", "coordinates": [ring]},
                                 "properties": {"objectType": "detection", "classification": {"name": ["Tumor", "Stroma", "Immune cells"][i % 3]},
                                                "measurements": {"Area": "NAN_HERE", "Perimeter": 3.5}}}).replace('"NAN_HERE"', "NaN" if nan else "1.0"))
    # A tissue annotation in the middle of the file, and a non-features key after the array.
    region = json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4000, 0], [4000, 4000], [0, 0]]]},
                         "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}})
    feats.insert(len(feats) // 2, region)
    return '{"type": "FeatureCollection",\n "features": [\n' + ",\n".join(feats) + '\n], "extra": {"a": [1, 2, NaN]}}'


def _reference(path):
    """The table as the whole-file reader builds it (json.load, then the same classification)."""
    objects = read_geojson_nuclei(path)
    nuclei, classes, regions, names = [], [], [], []
    for g, c, k in zip(objects.geometries, objects.class_names, objects.object_types):
        (nuclei if k == "detection" else regions).append(g)
        (classes if k == "detection" else names).append(c)
    return make_table(nuclei, classes, regions=regions, region_names=names, source=path)


def test_streamed_chunked_table_equals_the_whole_file_table(tmp_path, monkeypatch):
    path = tmp_path / "cells.geojson"
    path.write_text(_qupath_text(2500))
    monkeypatch.setattr(geojson_stream, "BLOCK_CHARS", 1000)  # items cross block edges
    monkeypatch.setattr(qupath, "CHUNK", 700)  # several validation/packing chunks
    table = load_annotations(path)
    ref = _reference(path)
    assert len(table) == len(ref) == 2500 and len(table.regions) == len(ref.regions) == 1
    assert list(table.classes) == list(ref.classes)
    assert all(shapely.equals_exact(a, b, 0) for a, b in zip(table.nuclei, ref.nuclei))
    assert np.array_equal(table.centroids(), ref.centroids()) and table.bounds() == ref.bounds()
    for box in [(0, 0, 256, 256), (500.5, 300.2, 900, 700), (10_000, 10_000, 10_100, 10_100)]:
        brute = np.flatnonzero(shapely.intersects(ref.nuclei, shapely.box(*box)))
        assert np.array_equal(table.query_nuclei(box), brute)
    assert table.tissue_at((0, 0, 100, 100)) == "Tumor"


def test_repairs_in_several_chunks_give_one_warning(tmp_path, monkeypatch):
    path = tmp_path / "bowties.geojson"
    path.write_text(_qupath_text(300, bow_ties=250))
    monkeypatch.setattr(qupath, "CHUNK", 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = load_annotations(path)
    msgs = [str(w.message) for w in caught if issubclass(w.category, AnnotationWarning)]
    assert len(msgs) == 1 and "250 invalid polygon(s) repaired" in msgs[0]
    assert len(table) == 300 and table.n_repaired == 250


def test_streaming_parse_peak_is_bounded(tmp_path):
    """Python-level peak while loading: the packed table (~350 bytes per nucleus) plus one copy of
    it while the chunks are joined, plus a bounded parse; json.load alone holds several times more."""
    path = tmp_path / "big.geojson"
    path.write_text(_qupath_text(12_000))
    tracemalloc.start()
    try:
        table = load_annotations(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tracemalloc.start()
    try:
        json.loads(path.read_text())
        _, whole = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(table) == 12_000
    assert peak < 2.2 * table.packed.nbytes + 2e6, f"peak {peak / 1e6:.1f} MB, packed {table.packed.nbytes / 1e6:.1f} MB"
    assert peak < whole / 3, f"peak {peak / 1e6:.1f} MB vs json.load {whole / 1e6:.1f} MB"


@pytest.mark.parametrize("text,match", [
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": null}', "not valid JSON"),
    ('{"type": "FeatureCollection", "features": [1, 2]}', "feature list holds a int"),
    ('[{"type": "Feature"}] trailing', "not valid JSON"),
    ('{"type": "FeatureCollection", "features": [{"a": 1} {"b": 2}]}', "not valid JSON"),
])
def test_malformed_streams_are_clear_errors(tmp_path, text, match):
    p = tmp_path / "bad.geojson"
    p.write_text(text)
    with pytest.raises(CosynthError, match=match) as err:
        load_annotations(p)
    assert str(p) in str(err.value)


def test_packed_subset_concat_and_memory():
    geoms = [shapely.Polygon(_ellipse(10 * i, 5.0)) for i in range(50)] + [shapely.Point(1, 2)]
    packed = PackedGeometries.pack(geoms)
    idx = np.array([50, 3, 0, 17])
    assert all(shapely.equals_exact(a, geoms[i], 0) for a, i in zip(packed.subset(idx).take(np.arange(4)), idx))
    both = PackedGeometries.concat([packed, packed.subset(idx)])
    assert len(both) == 55 and shapely.equals_exact(both.take([54])[0], geoms[17], 0)
    assert packed.nbytes / len(packed) < 450  # a 16-vertex polygon: ~350 bytes packed
    assert list(packed.type_ids[-2:]) == [3, 0]
