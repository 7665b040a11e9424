"""Reading slide annotations: QuPath GeoJSON forms, Aperio XML, HoVer-Net WSI JSON, GeoParquet."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import shapely
from conftest import data_path

from wsi_cosynth.annotations import AnnotationWarning, find_sidecar, load_annotations
from wsi_cosynth.errors import CosynthError

SQUARE = [[[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]]]


def _feature(geom, object_type=None, classification=None, **extra):
    props = {}
    if object_type:
        props["objectType"] = object_type
    if classification is not None:
        props["classification"] = classification
    return {"type": "Feature", "geometry": geom, "properties": props, **extra}


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def test_qupath_detections_cells_and_region_annotations(tmp_path):
    feats = [
        _feature({"type": "Polygon", "coordinates": SQUARE}, "detection", {"name": "Tumor", "color": [255, 0, 0]}),
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]]}, "cell",
                 "Lymphocyte", nucleusGeometry={"type": "Polygon", "coordinates": SQUARE}),
        _feature({"type": "MultiPolygon", "coordinates": [SQUARE, [[[30, 30], [40, 30], [40, 40], [30, 30]]]]},
                 "detection", {"names": ["Tumor", "Positive"], "color": [1, 2, 3]}),
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [500, 0], [500, 500], [0, 500], [0, 0]]]},
                 "annotation", {"name": "Stroma", "color": [0, 0, 0]}),
        _feature({"type": "Polygon", "coordinates": SQUARE}, "tile"),
    ]
    t = load_annotations(_write(tmp_path, "a.geojson", {"type": "FeatureCollection", "features": feats}))
    assert len(t) == 3 and list(t.classes) == ["Tumor", "Lymphocyte", "Tumor: Positive"]
    assert t.nuclei[1].area == 100  # the cell's nucleus, not its outline
    assert t.nuclei[2].geom_type == "MultiPolygon"
    assert list(t.region_names) == ["Stroma"] and t.tissue_at((10, 10, 60, 60)) == "Stroma"


@pytest.mark.parametrize("container", ["array", "feature", "geometry"])
def test_qupath_containers_without_detections_are_nuclei(tmp_path, container):
    f = _feature({"type": "Polygon", "coordinates": SQUARE}, None, "Tumor")
    data = {"array": [f, f], "feature": f, "geometry": f["geometry"]}[container]
    t = load_annotations(_write(tmp_path, "b.json", data))
    assert len(t) == (2 if container == "array" else 1) and not t.point_only
    assert len(t.regions) == 0


def test_qupath_points_legacy_ids_and_classes(tmp_path):
    feats = [
        {"type": "Feature", "id": "PathDetectionObject", "geometry": {"type": "Point", "coordinates": [5, 6]},
         "properties": {"classification": {"name": "Tumor", "colorRGB": -3670016}}},
        _feature({"type": "MultiPoint", "coordinates": [[1, 2], [3, 4], [7, 8]]}, "annotation", {"name": "Immune", "color": [0, 0, 0]}),
    ]
    t = load_annotations(_write(tmp_path, "p.geojson", feats))
    assert len(t) == 4 and t.point_only
    np.testing.assert_allclose(t.centroids()[1:], [[1, 2], [3, 4], [7, 8]])
    assert t.class_names() == ["Immune", "Tumor"]


def test_real_qupath_files(formats_dir):
    t = load_annotations(formats_dir / "qupath" / "DERIVED_qupath05_style_detections.geojson")
    assert len(t) == 20 and t.class_names() == ["Epithelial", "Inflammatory", "Spindle"]
    cv = load_annotations(formats_dir / "qupath" / "cellvitpp_JP2K-33003-2_cell_detection.geojson")
    assert cv.point_only and len(cv) > 30000
    legacy = load_annotations(formats_dir / "qupath" / "paquo_2021_test_legacy_v02_annotation.json")
    assert legacy.class_names() == ["Tumor"]


def test_self_intersecting_polygon_is_repaired_with_a_counted_warning(tmp_path):
    bowtie = [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]
    line_like = [[[0, 0], [5, 0], [10, 0], [0, 0]]]  # zero area: unusable
    feats = [_feature({"type": "Polygon", "coordinates": c}, "detection", "Tumor") for c in (bowtie, line_like, SQUARE)]
    with pytest.warns(AnnotationWarning, match=r"1 invalid polygon\(s\) repaired.*1 unusable"):
        t = load_annotations(_write(tmp_path, "bad.geojson", feats))
    assert len(t) == 2 and t.n_repaired == 1 and t.n_skipped == 1
    assert all(g.is_valid for g in t.nuclei) and t.nuclei[0].area == pytest.approx(50)


@pytest.mark.parametrize("text,match", [("{not json", "not valid JSON"), ('{"type": "Banana"}', "not GeoJSON"),
                                        ('[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,1]]]}}]', "geometry")])
def test_invalid_geojson_names_the_file(tmp_path, text, match):
    p = tmp_path / "broken.geojson"
    p.write_text(text)
    with pytest.raises(CosynthError, match=match) as err:
        load_annotations(p)
    assert "broken.geojson" in str(err.value)


def test_monusac_aperio_xml():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        t = load_annotations(data_path("monusac", "A9K0_1.xml"))
    assert len(t) == 321 and set(t.class_names()) == {"Epithelial", "Macrophage"}
    b = t.bounds()
    assert 0 <= b[0] and b[2] <= 1307 and b[3] <= 1153


def test_aperio_xml_monuseg_style_and_broken(tmp_path):
    xml = ('<Annotations><Annotation Id="1"><Regions><Region Id="1" Type="0"><Vertices>'
           '<Vertex X="1" Y="1"/><Vertex X="9" Y="1"/><Vertex X="9" Y="9"/><Vertex X="1" Y="9"/></Vertices></Region>'
           '<Region Id="2" Type="2"><Vertices><Vertex X="20" Y="20"/><Vertex X="30" Y="26"/></Vertices></Region>'
           '</Regions></Annotation></Annotations>')
    (tmp_path / "s.xml").write_text(xml)
    t = load_annotations(tmp_path / "s.xml")
    assert t.class_names() == ["nucleus"] and t.nuclei[0].area == 64
    regions = load_annotations(tmp_path / "s.xml", role="regions")  # e.g. --tissue-regions regions.xml
    assert len(regions) == 0 and [round(r.area) for r in regions.regions] == [64, round(t.nuclei[1].area)]
    assert t.nuclei[1].area == pytest.approx(np.pi * 5 * 3, rel=0.01)  # ellipse from its box
    (tmp_path / "x.xml").write_text("<Annotations><Annotation>")
    with pytest.raises(CosynthError, match=r"x\.xml.*XML"):
        load_annotations(tmp_path / "x.xml")


def _imagescope_xml(*layers: tuple[str, list[tuple[str, str]]]) -> str:
    """ImageScope XML, one square nucleus per layer; a layer is (its Name, [(Attribute Name, Value)])."""
    parts = []
    for i, (layer_name, attributes) in enumerate(layers):
        attrs = "".join(f'<Attribute Name="{n}" Id="0" Value="{v}"/>' for n, v in attributes)
        x = 20 * i
        vertices = "".join(f'<Vertex X="{x + dx}" Y="{dy}"/>' for dx, dy in [(0, 0), (8, 0), (8, 8), (0, 8)])
        parts.append(f'<Annotation Id="{i + 1}" Name="{layer_name}" Type="4"><Attributes>{attrs}</Attributes>'
                     f'<Regions><Region Id="{i + 1}" Type="0"><Vertices>{vertices}</Vertices></Region></Regions>'
                     '</Annotation>')
    return f'<Annotations MicronsPerPixel="0.25">{"".join(parts)}</Annotations>'


def _layer_classes(tmp_path, *layers) -> list[str]:
    p = tmp_path / "layers.xml"
    p.write_text(_imagescope_xml(*layers))
    table = load_annotations(p)
    return [str(c) for c in table.classes[np.argsort(table.centroids()[:, 0])]]  # back in layer order


@pytest.mark.parametrize("layer_name", ["", "Layer 1"])
def test_imagescope_default_attributes_are_not_classes(tmp_path, layer_name):
    # ImageScope gives every new layer an empty Description attribute (MoNuSeg's original XML).
    defaults = [("Description", "")]
    assert _layer_classes(tmp_path, (layer_name, defaults)) == ["nucleus"]
    builtin_columns = [("Region", ""), ("Length", ""), ("Area", ""), ("Text", "")]
    assert _layer_classes(tmp_path, (layer_name, builtin_columns)) == ["nucleus"]
    # What an annotator typed into the Description column is kept, not dropped.
    assert _layer_classes(tmp_path, (layer_name, [("Description", "tumor")])) == ["tumor"]
    assert _layer_classes(tmp_path, ("Tumour cells", defaults)) == ["Tumour cells"]


def test_monusac_style_class_attribute_is_a_class(tmp_path):
    monusac = ["Epithelial", "Lymphocyte", "Neutrophil", "Macrophage"]
    assert _layer_classes(tmp_path, *[("", [(c, "")]) for c in monusac]) == monusac
    # Beside ImageScope's default Description, under a placeholder layer name (MoNuSAC's A9K0_2.xml).
    layers = [("Layer 2", [("Description", ""), (c, "")]) for c in monusac]
    assert _layer_classes(tmp_path, *layers) == monusac


def test_original_monuseg_xml_is_unclassified_like_the_derived():
    train = data_path("monuseg", "train")
    derived = set(data_path("monuseg", "derived_xml.txt").read_text().split())
    original = min(p for p in train.glob("*.xml") if p.stem not in derived)  # ~1 s per file: one of each
    assert '<Attribute Name="Description" Id="0" Value=""/>' in original.read_text()
    for path in [original, train / f"{min(derived)}.xml"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AnnotationWarning)  # hand-drawn outlines get repaired
            table = load_annotations(path)
        assert len(table) > 0 and table.class_names() == ["nucleus"], path.name


def test_hovernet_wsi_json_is_scaled_to_level0(tmp_path):
    data = {"mag": 20, "nuc": {"1": {"contour": [[10, 10], [20, 10], [20, 20], [10, 20]], "centroid": [15, 15], "type": 2},
                               "2": {"contour": [[0, 0], [4, 0], [4, 4]], "centroid": [2, 1], "type": 0}}}
    p = _write(tmp_path, "hn.json", data)
    with pytest.raises(CosynthError, match="base"):
        load_annotations(p)
    t = load_annotations(p, base_mag=40, type_names="pannuke")
    assert list(t.classes) == ["inflammatory", "unlabelled"]
    # Boundary pixels 10..20 at 20x are the squares [10, 21) there, [20, 42) at 40x level 0.
    assert t.nuclei[0].bounds == (20.0, 20.0, 42.0, 42.0)
    assert t.centroids()[0].tolist() == [31.0, 31.0]
    for bad, needle in (({"mag": 0}, "'mag'"), ({"nuc": {"1": {"contour": [[0, 0], [4, 0], [4, 4]], "type": "x"}}}, "'x'")):
        with pytest.raises(CosynthError, match=needle):
            load_annotations(_write(tmp_path, "bad.json", {**data, **bad}), base_mag=40, type_names="pannuke")


def test_geoparquet_nuclei_and_regions():
    t = load_annotations(data_path("histolytics", "hgsc_nest.parquet"))
    assert len(t) == 1295 and not t.point_only
    r = load_annotations(data_path("histolytics", "hgsc_tissue_wsi.parquet"), role="regions")
    assert len(r) == 0 and len(r.regions) > 3000 and "stroma" in set(r.region_names)


def test_strtree_query_matches_brute_force():
    t = load_annotations(data_path("histolytics", "hgsc_nest.parquet"))
    box = (300.0, 400.0, 556.0, 656.0)
    brute = np.flatnonzero(shapely.intersects(t.nuclei, shapely.box(*box)))
    np.testing.assert_array_equal(t.query_nuclei(box), brute)
    assert len(brute) > 10


def test_sidecar_discovery_and_unknown_type(tmp_path):
    slide = tmp_path / "x.svs"
    slide.write_bytes(b"")
    assert find_sidecar(slide) is None
    (tmp_path / "x.xml").write_text("<Annotations/>")
    assert find_sidecar(slide) == tmp_path / "x.xml"
    (tmp_path / "x.geojson").write_text("[]")
    assert find_sidecar(slide) == tmp_path / "x.geojson"  # GeoJSON first
    (tmp_path / "a.txt").write_text("")
    with pytest.raises(CosynthError, match="unknown file type"):
        load_annotations(tmp_path / "a.txt")
