"""Real GeoJSON export writes the SOURCE outlines clipped to each tile (level-0 pixels), not a
trace of the rasterised mask; the tiles' masks and the slide-level file stay as before."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
import shapely.affinity
import shapely.geometry
from slide_fixtures import synthetic_he, write_svs

from wsi_cosynth.annotations import load_annotations
from wsi_cosynth.exporters import read_dataset
from wsi_cosynth.geometry import rasterize_polygon
from wsi_cosynth.pipeline import export_real
from wsi_cosynth.pipeline.planning import OUTLINES_KEY, iter_slide_tiles, labelled_tile, plan_slide
from wsi_cosynth.taxonomy import get_taxonomy

pytestmark = pytest.mark.filterwarnings("ignore::wsi_cosynth.annotations.AnnotationWarning")


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """A slide with rotated elliptical nuclei, some cut by tile borders (at 0.5 mpp: 256 px tiles)."""
    root = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(11)
    slide = write_svs(root / "s.svs", synthetic_he(1024, 1024, tissue_fraction=1.0), mpp=0.25, downsamples=(1, 4))
    feats, nuclei = [], []
    while len(nuclei) < 150:
        cx, cy = rng.uniform(10, 1014, size=2)
        a, b, ang = rng.uniform(4, 10), rng.uniform(3, 7), rng.uniform(0, 180)
        g = shapely.affinity.rotate(shapely.affinity.scale(shapely.Point(cx, cy).buffer(1.0, 12), a, b), ang)
        if any(g.intersects(n) for n in nuclei):
            continue
        nuclei.append(g)
        feats.append({"type": "Feature", "geometry": shapely.geometry.mapping(g),
                      "properties": {"objectType": "detection", "classification": {"name": "Epithelial"}}})
    (root / "s.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return slide, nuclei


def test_features_are_the_clipped_source_outlines(annotated, tmp_path):
    slide, nuclei = annotated
    export_real(slide, None, tmp_path / "gj", "geojson", mpp=0.5, tile_size=128, taxonomy="lizard")
    index = json.loads((tmp_path / "gj" / "index.json").read_text())
    tree = shapely.STRtree(nuclei)
    n_cut = n_whole = 0
    for entry in index["tiles"]:
        pl = entry["placement"]
        box = shapely.box(pl["x0"], pl["y0"], pl["x0"] + 128 * pl["scale"], pl["y0"] + 128 * pl["scale"])
        for feat in json.loads((tmp_path / "gj" / entry["geojson"]).read_text())["features"]:
            got = shapely.geometry.shape(feat["geometry"])
            src = nuclei[int(tree.query(got.representative_point(), predicate="intersects")[0])]
            expected = shapely.clip_by_rect(src, *box.bounds)
            # Same outline up to the 2-decimal rounding of the written coordinates.
            assert shapely.hausdorff_distance(got, expected) <= 0.01
            assert feat["properties"]["measurements"]["Area px^2"] == pytest.approx(expected.area / pl["scale"] ** 2, rel=1e-9)
            if src.within(box):
                n_whole += 1
                assert len(got.exterior.coords) == len(src.exterior.coords)  # no pixel staircase
            else:
                n_cut += 1
    assert n_whole > 50 and n_cut > 10


def test_tile_masks_are_unchanged_by_the_outlines(annotated):
    """The instance map still comes from rasterising the polygons; outlines ride along beside it."""
    slide, nuclei = annotated
    tax = get_taxonomy("lizard")
    with plan_slide(slide, None, mpp=0.5, tile_size=128) as plan:
        lookup = {"Epithelial": tax.id_of("epithelial")}
        for tile in list(iter_slide_tiles(plan))[:6]:
            lt = labelled_tile(plan, tile, tax, lookup)
            outlines = lt.extra[OUTLINES_KEY]
            assert len(outlines) == lt.n_nuclei
            pos = tile.position
            for k, outline in enumerate(outlines):
                # Rasterising the clipped outline in tile pixels gives instance k+1's pixels
                # (the nuclei do not overlap, so nothing is painted over).
                mask = rasterize_polygon(outline, (128, 128), offset_xy=(0.0, 0.0), scale=1.0)
                assert np.array_equal(mask, lt.instances == k + 1), (pos.name, k)


def test_reading_the_export_back_gives_the_same_masks_as_coco(annotated, tmp_path):
    slide, _ = annotated
    export_real(slide, None, tmp_path / "gj", "geojson", mpp=0.5, tile_size=128, taxonomy="lizard")
    export_real(slide, None, tmp_path / "coco", "coco", mpp=0.5, tile_size=128, taxonomy="lizard")
    gj = {t.provenance.name: t for t in read_dataset(tmp_path / "gj", "geojson")}
    coco = {t.provenance.name: t for t in read_dataset(tmp_path / "coco", "coco")}
    assert gj.keys() == coco.keys() and len(gj) == 16
    for name, t in coco.items():
        # Re-rasterised from the written outlines (2-decimal coordinates): at most a few pixels
        # whose centre lies within 0.01 px of an outline can differ.
        assert np.mean((gj[name].instances > 0) != (t.instances > 0)) < 0.002
        assert gj[name].n_nuclei == t.n_nuclei


def test_slide_level_file_joins_the_tile_files(annotated, tmp_path):
    slide, nuclei = annotated
    export_real(slide, None, tmp_path / "gj", "geojson", mpp=0.5, tile_size=128, taxonomy="lizard")
    index = json.loads((tmp_path / "gj" / "index.json").read_text())
    expected = [f for e in index["tiles"] for f in json.loads((tmp_path / "gj" / e["geojson"]).read_text())["features"]]
    text = (tmp_path / "gj" / "s.geojson").read_text()
    assert text == json.dumps({"type": "FeatureCollection", "features": expected}, separators=(",", ":"))
    assert len(load_annotations(tmp_path / "gj" / "s.geojson")) == len(expected) >= len(nuclei)


def test_vectorised_rounding_is_pythons_round():
    from wsi_cosynth.exporters.geojson import _round2

    rng = np.random.default_rng(2)
    values = np.concatenate([rng.uniform(-1e4, 1e6, 200_000), np.arange(-3000, 3000) / 1000 + 0.005,
                             np.arange(0, 1000) * 0.125, [0.145, 0.285, 1.005, 2.675, -0.001, 2.0**31 - 0.005]])
    got = _round2(values.reshape(-1, 2) if len(values) % 2 == 0 else values)
    assert got.reshape(-1).tolist() == [round(float(v), 2) for v in values]


def test_a_feature_error_in_the_background_aborts_the_output(annotated, tmp_path, monkeypatch):
    from wsi_cosynth.errors import CosynthError
    from wsi_cosynth.exporters import geojson

    slide, _ = annotated
    real, calls = geojson.tile_collection_json, {"n": 0}

    def failing(tile, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise CosynthError("boom while writing features")
        return real(tile, **kw)

    monkeypatch.setattr(geojson, "tile_collection_json", failing)
    with pytest.raises(CosynthError, match="boom"):
        export_real(slide, None, tmp_path / "gj", "geojson", mpp=0.5, tile_size=128, taxonomy="lizard")
    assert not (tmp_path / "gj").exists()


def test_vectorised_simple_outlines_equal_the_per_nucleus_path(annotated, monkeypatch):
    """Tiles' features with the vectorised path for simple outlines are byte-equal to the
    one-by-one path (nucleus_geometry) for every nucleus."""
    from wsi_cosynth.exporters import geojson

    slide, _ = annotated
    tax = get_taxonomy("lizard")
    with plan_slide(slide, None, mpp=0.5, tile_size=128) as plan:
        tiles = [labelled_tile(plan, t, tax, {"Epithelial": tax.id_of("epithelial")}) for t in iter_slide_tiles(plan)]
    fast = [json.dumps(geojson.tile_features(t)) for t in tiles]
    monkeypatch.setattr(geojson, "_simple_outline_geometries", lambda *a: {})
    slow = [json.dumps(geojson.tile_features(t)) for t in tiles]
    assert fast == slow and sum(t.n_nuclei for t in tiles) > 150


def test_tile_files_hold_the_bytes_json_dumps_gives_for_the_features(annotated):
    """The writer's text assembly equals json.dumps of tile_features, with and without source
    outlines (traced from the mask), one Polygon or MultiPolygons."""
    from dataclasses import replace

    from wsi_cosynth.exporters import geojson

    slide, _ = annotated
    tax = get_taxonomy("lizard")
    with plan_slide(slide, None, mpp=0.5, tile_size=128) as plan:
        tiles = [labelled_tile(plan, t, tax, {"Epithelial": tax.id_of("epithelial")}) for t in iter_slide_tiles(plan)]
    traced = [replace(t, extra={}) for t in tiles]
    checked = 0
    for tile in tiles + traced:
        for multi in (False, True):
            features = geojson.tile_features(tile, multipolygon=multi)
            expected = json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"))
            assert geojson.tile_collection_json(tile, multipolygon=multi) == expected
            checked += len(features)
    assert checked > 600


def test_feature_ids_are_uuid5_of_tile_and_instance():
    import uuid

    from wsi_cosynth.exporters.geojson import _NAMESPACE, _uuid5

    names = [f"slide_x{i * 512}_y{j}/{k}" for i in range(30) for j in (0, 7) for k in (1, 99)] + ["é/1", "a" * 300]
    assert all(_uuid5(n) == str(uuid.uuid5(_NAMESPACE, n)) for n in names)
