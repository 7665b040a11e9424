"""Real-data export from annotated slides: COCO (MoNuSAC), GeoJSON round trip, errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import shapely
import shapely.affinity
import shapely.geometry
from conftest import data_path
from slide_fixtures import synthetic_he, write_svs

from wsi_cosynth.annotations import AnnotationWarning, load_annotations
from wsi_cosynth.cli import main
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.geometry import rasterize_polygon
from wsi_cosynth.pipeline import export_real, iter_slide_tiles, plan_slide, tile_layout
from wsi_cosynth.pipeline.real import class_lookup
from wsi_cosynth.taxonomy import get_taxonomy, map_name

pytestmark = pytest.mark.filterwarnings("ignore::wsi_cosynth.annotations.AnnotationWarning")


def test_monusac_coco_every_nucleus_once_with_its_class(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    slide, xml = data_path("monusac", "A9K0_1.svs"), data_path("monusac", "A9K0_1.xml")
    mpp, size = 0.25, 256
    summary = export_real(slide, xml, tmp_path / "coco", "coco", mpp=mpp, tile_size=size)
    assert summary.taxonomy == "monusac" and summary.n_tiles == 9
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    table = load_annotations(xml)
    tax = get_taxonomy("monusac")
    scale = mpp / 0.19448
    cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    checked = 0
    for img in coco.loadImgs(coco.getImgIds()):
        name = img["file_name"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        x0, y0 = (int(v[1:]) for v in name.split("_")[-2:])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        inside = np.flatnonzero(
            (table.centroids()[:, 0] >= x0) & (table.centroids()[:, 0] < x0 + size * scale)
            & (table.centroids()[:, 1] >= y0) & (table.centroids()[:, 1] < y0 + size * scale))
        for i in inside:
            ref = rasterize_polygon(table.nuclei[i], (size, size), offset_xy=(x0, y0), scale=scale)
            if ref.sum() < 4:
                continue
            ious = [np.logical_and(ref, m).sum() / np.logical_or(ref, m).sum() for m in masks]
            hits = [k for k, iou in enumerate(ious) if iou > 0.5]
            assert len(hits) == 1, (name, i, sorted(ious)[-3:])
            assert cats[anns[hits[0]]["category_id"]] == tax.names[map_name(table.classes[i], tax) - 1]
            checked += 1
        # Every annotation is a distinct nucleus: no pixel is claimed twice.
        if masks:
            assert np.sum(masks, axis=0).max() == 1
            assert all(mask_utils.area(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))) > 0 for m in masks)
    assert checked > 200


def test_geojson_export_reimports_same_polygons(tmp_path):
    slide, xml = data_path("monusac", "A9K0_2.svs"), data_path("monusac", "A9K0_2.xml")
    # Native resolution: tile pixels are level-0 pixels, so polygons come back on the same grid.
    export_real(slide, xml, tmp_path / "gj", "geojson", mpp=0.19448, tile_size=256)
    files = list((tmp_path / "gj").glob("*.geojson"))
    assert [f.name for f in files] == ["A9K0_2.geojson"]
    back = load_annotations(files[0])
    orig = load_annotations(xml)
    with plan_slide(slide, xml, mpp=0.19448, tile_size=256) as plan:
        tiles = {(p.x_level0, p.y_level0) for p in plan.positions()}
    tree = shapely.STRtree(back.nuclei)
    matched, dists = 0, []
    for g, cls in zip(orig.nuclei, orig.classes):
        x0, y0, x1, y1 = g.bounds
        # Nuclei wholly inside one exported 256-px tile (scale 1: tile origins are multiples of 256).
        tile = (int(x0 // 256) * 256, int(y0 // 256) * 256)
        if tile not in tiles or int(x1 // 256) * 256 != tile[0] or int(y1 // 256) * 256 != tile[1]:
            continue
        cand = tree.query(g, predicate="intersects")
        best = max(cand, key=lambda k: shapely.intersection(g, back.nuclei[k]).area)
        h = shapely.hausdorff_distance(g, back.nuclei[best])
        iou = shapely.intersection(g, back.nuclei[best]).area / shapely.union(g, back.nuclei[best]).area
        # MoNuSAC outlines are hand-drawn with 1-px spikes; the raster keeps what covers pixel centres.
        assert iou > 0.75 and h <= 2.5, (h, iou)
        assert back.classes[best].lower() == cls.lower()
        dists.append(h)
        matched += 1
    assert matched > 100
    assert np.mean(np.array(dists) <= 1.0) > 0.9


def test_geojson_round_trip_within_one_pixel(tmp_path):
    rng = np.random.default_rng(3)
    slide = write_svs(tmp_path / "e.svs", synthetic_he(512, 512, tissue_fraction=1.0), mpp=0.25, downsamples=(1,))
    feats, nuclei = [], []
    for _ in range(60):
        cx, cy = rng.uniform(12, 500, size=2)
        a, b, ang = rng.uniform(3, 8), rng.uniform(3, 8), rng.uniform(0, 180)
        g = shapely.affinity.rotate(shapely.affinity.scale(shapely.Point(cx, cy).buffer(1.0, 16), a, b), ang)
        if any(g.intersects(n) for n in nuclei):
            continue
        nuclei.append(g)
        feats.append({"type": "Feature", "geometry": shapely.geometry.mapping(g),
                      "properties": {"objectType": "detection", "classification": {"name": "Epithelial", "color": [1, 1, 1]}}})
    (tmp_path / "e.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    export_real(slide, None, tmp_path / "gj", "geojson", mpp=0.25, tile_size=128, taxonomy="lizard")
    back = load_annotations(tmp_path / "gj" / "e.geojson")
    inside = [g for g in nuclei if int(g.bounds[0] // 128) == int(g.bounds[2] // 128)
              and int(g.bounds[1] // 128) == int(g.bounds[3] // 128)]
    assert len(back) >= len(nuclei) and len(inside) > 20
    tree = shapely.STRtree(back.nuclei)
    for g in inside:
        cand = tree.query(g, predicate="intersects")
        assert len(cand) == 1
        assert shapely.hausdorff_distance(g, back.nuclei[cand[0]]) <= 1.0


def test_real_slides_export_without_annotations(tmp_path):
    s = export_real(data_path("slides", "CMU-1-Small-Region.svs"), None, tmp_path / "cmu", "lizard", mpp=1.0)
    assert s.n_tiles > 3 and s.n_nuclei == 0 and (tmp_path / "cmu").is_dir()
    d = export_real(data_path("slides", "small_dicom.dcm"), None, tmp_path / "dcm", "pannuke", mpp=2.0,
                    tile_size=128, slide_mpp=0.5)
    assert d.n_tiles > 3


def test_point_only_annotations_give_layouts_but_no_export(tmp_path):
    slide = write_svs(tmp_path / "s.svs", synthetic_he(512, 512, tissue_fraction=1.0), mpp=0.5, downsamples=(1,))
    feats = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
              "properties": {"objectType": "detection", "classification": {"name": "Lymphocyte", "color": [0, 0, 0]}}}
             for x, y in [(10, 10), (300, 40), (100, 400)]]
    ann = tmp_path / "s.geojson"
    ann.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with pytest.raises(CosynthError, match="only points"):
        export_real(slide, ann, tmp_path / "out", "coco")
    assert not (tmp_path / "out").exists()
    tax = get_taxonomy("lizard")
    with plan_slide(slide, None) as plan:  # sidecar s.geojson found next to s.svs
        lookup = class_lookup(plan.annotations, tax, None)
        layouts = [tile_layout(plan, t, tax, lookup) for t in iter_slide_tiles(plan)]
    assert sum(len(l) for l in layouts) == 3
    assert layouts[0].placement is not None and layouts[0].provenance.mpp == 0.5


def test_tissue_type_from_regions_else_default(tmp_path):
    slide = write_svs(tmp_path / "r.svs", synthetic_he(512, 512, tissue_fraction=1.0), mpp=0.5, downsamples=(1,))
    feats = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [256, 0], [256, 512], [0, 512], [0, 0]]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [1, 1, 1]}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[20, 20], [30, 20], [30, 30], [20, 30], [20, 20]]]},
         "properties": {"objectType": "detection", "classification": {"name": "Epithelial", "color": [1, 1, 1]}}},
    ]
    ann = tmp_path / "ann.geojson"
    ann.write_text(json.dumps(feats))
    with plan_slide(slide, ann, tissue="colon") as plan:
        tissues = {(p.x_level0, p.y_level0): p.tissue for p in plan.positions()}
    assert tissues == {(0, 0): "Tumor", (256, 0): "colon", (0, 256): "Tumor", (256, 256): "colon"}


def _cli(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_cli_export_and_bad_inputs(tmp_path, capsys):
    slide = write_svs(tmp_path / "c.svs", synthetic_he(512, 512, tissue_fraction=1.0), mpp=0.5, downsamples=(1,))
    poly = lambda x, y, name: {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + 9, y], [x + 9, y + 9], [x, y + 9], [x, y]]]},  # noqa: E731
                               "properties": {"objectType": "detection", "classification": {"name": name, "color": [1, 1, 1]}}}
    good = tmp_path / "good.geojson"
    good.write_text(json.dumps([poly(20, 20, "Lymphocyte"), poly(300, 300, "Epithelial")]))
    rc, text = _cli(["export", "--slide", str(slide), "--annotations", str(good), "--source", "real", "--format", "coco",
                     "--out", str(tmp_path / "ok"), "--no-progress", "--taxonomy", "lizard"], capsys)
    assert rc == 0 and "4 tiles, 2 nuclei" in text
    ann = json.loads((tmp_path / "ok" / "annotations.json").read_text())
    assert len(ann["annotations"]) == 2 and all("counts" in a["segmentation"] for a in ann["annotations"])
    rc, _ = _cli(["export", "--slide", str(slide), "--annotations", str(good), "--source", "real", "--format", "coco",
                  "--coco-segmentation", "polygon", "--out", str(tmp_path / "poly"), "--no-progress"], capsys)
    polys = json.loads((tmp_path / "poly" / "annotations.json").read_text())["annotations"]
    assert rc == 0 and [len(a["segmentation"][0]) for a in polys] == [8, 8]  # 9 x 9 px squares: 4 corners each

    unknown = tmp_path / "unknown.geojson"
    unknown.write_text(json.dumps([poly(20, 20, "Banana")]))
    outside = tmp_path / "outside.geojson"
    outside.write_text(json.dumps([poly(5000, 5000, "Lymphocyte")]))
    invalid = tmp_path / "invalid.geojson"
    invalid.write_text("{oops")
    blank = write_svs(tmp_path / "blank.svs", np.full((512, 512, 3), 244, np.uint8), mpp=0.5, downsamples=(1,))
    nompp = write_svs(tmp_path / "nompp.svs", synthetic_he(256, 256), mpp=None, downsamples=(1,))
    cases = [
        (["--slide", str(tmp_path / "missing.svs")], "missing.svs"),
        (["--slide", str(good)], "good.geojson"),  # not a slide
        (["--slide", str(slide), "--annotations", str(unknown), "--taxonomy", "lizard"], "Banana"),
        (["--slide", str(slide), "--annotations", str(outside)], "outside"),
        (["--slide", str(slide), "--annotations", str(invalid)], "invalid.geojson"),
        (["--slide", str(blank)], "no tissue"),
        (["--slide", str(nompp)], "--slide-mpp"),
    ]
    for args, needle in cases:
        out = tmp_path / "fail"
        rc, text = _cli(["export", *args, "--source", "real", "--format", "coco", "--out", str(out), "--no-progress"],
                        capsys)
        assert rc == 2, (args, text)
        assert needle in text and "Traceback" not in text, (args, text)
        assert not out.exists() and not list(tmp_path.glob(".fail*")), args


def test_annotation_warnings_reported(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)
        with pytest.raises(AnnotationWarning):
            load_annotations(data_path("monusac", "A9K0_1.xml"))
    with plan_slide(data_path("monusac", "A9K0_1.svs"), None, mpp=0.25) as plan:
        assert any("repaired" in w for w in plan.warnings)
