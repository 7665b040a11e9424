"""``wsi-cosynth detect``: a real (tiny) detector trained here on generated nuclei, run over slides
in windows; nuclei on window borders written once, resume after a kill, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slide_fixtures import write_svs
from wsi_cosynth.cli import main

REPO = Path(__file__).resolve().parents[1]
PINK, PURPLE = np.array([236, 200, 222]), np.array([90, 50, 140])
RADIUS = 5
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _disc_image(h: int, w: int, centres: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 pink background with purple discs at ``centres`` (x, y), and their instances."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] + 0.5
    instances = np.zeros((h, w), np.int32)
    for k, (x, y) in enumerate(centres, start=1):
        instances[(np.hypot(xx - x, yy - y) <= RADIUS) & (instances == 0)] = k
    image = np.where(instances[..., None] > 0, PURPLE, PINK) + rng.normal(0, 6, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), instances


def _spread(n: int, h: int, w: int, rng: np.random.Generator, gap: float = 20) -> np.ndarray:
    """Up to ``n`` disc centres at least ``gap`` px apart (as many as 20,000 draws place)."""
    out: list[np.ndarray] = []
    for _ in range(20000):
        if len(out) == n:
            break
        c = rng.uniform(RADIUS + 2, [w - RADIUS - 2, h - RADIUS - 2])
        if all(np.hypot(*(c - o)) >= gap for o in out):
            out.append(c)
    return np.array(out)


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> Path:
    """A detector trained here for ~10 s on generated discs: it finds them all."""
    from wsi_cosynth.detection import Detector
    from wsi_cosynth.detection.segmenter import SegmenterConfig, train_segmenter
    from wsi_cosynth.records import LabelledTile, Provenance
    from wsi_cosynth.taxonomy import get_taxonomy

    nucleus = get_taxonomy("nucleus")
    rng = np.random.default_rng(0)
    tiles = []
    for i in range(12):
        image, inst = _disc_image(64, 64, _spread(5, 64, 64, rng, gap=14), seed=i)
        tiles.append(LabelledTile(image=image, instances=inst, classes=np.ones(int(inst.max()), np.int64),
                                  taxonomy=nucleus, provenance=Provenance(name=f"d{i}", mpp=0.5)))
    config = SegmenterConfig(widths=(8, 16, 32), steps=160, batch_size=8, crop=64, lr=5e-3, threads=1, h=0.1)
    net = train_segmenter(tiles, 1, config)
    return Detector(net, nucleus, mpp=0.5, h=0.1, widths=(8, 16, 32)).save(tmp_path_factory.mktemp("det") / "d")


def _feature_centres(path: Path) -> np.ndarray:
    features = json.loads(path.read_text())["features"]
    assert all(f["geometry"]["type"] == "Polygon" for f in features)
    return np.array([np.mean(f["geometry"]["coordinates"][0][:-1], axis=0) for f in features]).reshape(-1, 2)


def test_nuclei_on_window_borders_are_written_once(detector_dir, tmp_path):
    """Windows of 64 px: discs centred on the lines x, y = 64, 128, 192 (and their crossings) and
    discs inside windows; each is written exactly once, with its class and a confidence."""
    lines = [64.0, 128.0, 192.0]
    on_border = [(x, y) for x in lines for y in (30.0, 100.0, 160.0, 225.0)] + \
                [(x, y) for y in lines for x in (30.0, 96.0, 225.0)] + [(128.0, 128.0)]
    inside = [(96.0, 30.0), (30.0, 160.0), (160.0, 96.0)]
    centres = np.array(on_border + inside)
    image, _ = _disc_image(256, 256, centres, seed=9)
    slide = write_svs(tmp_path / "discs.svs", image, mpp=0.5)
    out = tmp_path / "nuclei.geojson"
    assert main(["detect", "--slide", str(slide), "--out", str(out), "--detector", str(detector_dir), "--window", "64",
                 "--min-tissue", "0", "--no-progress", "--threads", "1"]) == 0
    found = _feature_centres(out)
    distance = np.hypot(*(found[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    assert distance.min(axis=0).max() < 3, "a disc was lost"  # every disc found
    assert (distance < 4).sum(axis=0).tolist() == [1] * len(centres), "a disc was written twice"
    assert len(found) == len(centres)
    props = [f["properties"] for f in json.loads(out.read_text())["features"]]
    assert all(p["classification"]["name"] == "nucleus" for p in props)
    assert all(0.5 < p["measurements"]["Detection confidence"] <= 1 for p in props)
    assert not list(tmp_path.glob(".*"))  # no work directory or lock left


def test_the_output_is_read_back_as_annotations(detector_dir, tmp_path):
    """What detect writes, export reads as annotations: the nuclei come back as a real dataset."""
    rng = np.random.default_rng(3)
    image, _ = _disc_image(128, 128, _spread(10, 128, 128, rng), seed=3)
    slide = write_svs(tmp_path / "s.svs", image, mpp=0.5)
    out = tmp_path / "s.geojson"
    assert main(["detect", "--slide", str(slide), "--out", str(out), "--detector", str(detector_dir), "--min-tissue", "0",
                 "--no-progress"]) == 0
    n = len(json.loads(out.read_text())["features"])
    coco = tmp_path / "coco"
    assert main(["export", "--slide", str(slide), "--annotations", str(out), "--source", "real", "--format", "coco",
                 "--out", str(coco), "--mpp", "0.5", "--tile-size", "128", "--min-tissue", "0", "--no-progress"]) == 0
    assert len(json.loads((coco / "annotations.json").read_text())["annotations"]) == n == 10


def test_geoparquet_output_holds_the_same_nuclei(detector_dir, tmp_path):
    """``--out x.parquet``: GeoParquet with the GeoJSON's nuclei (polygons, classes, confidences),
    read back by the annotation reader and by export."""
    import pyarrow.parquet as pq
    import shapely

    from wsi_cosynth.annotations import load_annotations

    rng = np.random.default_rng(11)
    image, _ = _disc_image(256, 256, _spread(30, 256, 256, rng), seed=11)
    slide = write_svs(tmp_path / "s.svs", image, mpp=0.5)
    common = ["--slide", str(slide), "--detector", str(detector_dir), "--window", "64", "--min-tissue", "0",
              "--no-progress", "--threads", "1"]
    assert main(["detect", *common, "--out", str(tmp_path / "n.geojson")]) == 0
    assert main(["detect", *common, "--out", str(tmp_path / "n.parquet")]) == 0
    table = pq.read_table(tmp_path / "n.parquet")
    meta = json.loads(table.schema.metadata[b"geo"])
    assert meta["primary_column"] == "geometry" and meta["columns"]["geometry"]["encoding"] == "WKB"
    features = json.loads((tmp_path / "n.geojson").read_text())["features"]
    assert table.num_rows == len(features) == 30
    polygons = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(shapely.area(polygons), [shapely.from_geojson(json.dumps(f["geometry"])).area
                                                        for f in features])
    assert table.column("confidence").to_pylist() == pytest.approx(
        [f["properties"]["measurements"]["Detection confidence"] for f in features])
    read = load_annotations(tmp_path / "n.parquet")
    assert len(read) == 30 and set(map(str, read.classes)) == {"nucleus"}


def test_windows_on_a_dask_cluster_give_the_in_process_file(detector_dir, tmp_path):
    """``--scheduler``: the windows run as tasks on a real Dask cluster (scheduler and workers
    started as a user would, on loopback), in any order, and the file is byte-identical to the
    in-process one (the border merge is made at assembly, in grid order)."""
    from dask_cluster import loopback_cluster

    rng = np.random.default_rng(12)
    image, _ = _disc_image(384, 384, _spread(60, 384, 384, rng, gap=16), seed=12)
    slide = write_svs(tmp_path / "s.svs", image, mpp=0.5)
    common = ["--slide", str(slide), "--detector", str(detector_dir), "--window", "64", "--min-tissue", "0",
              "--no-progress", "--threads", "1"]
    assert main(["detect", *common, "--out", str(tmp_path / "here.geojson")]) == 0
    with loopback_cluster(tmp_path / "cluster") as cluster:
        out = tmp_path / "cluster.geojson"
        assert main(["detect", *common, "--out", str(out), "--scheduler", cluster.address]) == 0, cluster.log_tail()
    assert out.read_bytes() == (tmp_path / "here.geojson").read_bytes()
    assert len(json.loads(out.read_text())["features"]) == 60


def test_a_killed_run_resumes_to_the_same_file(detector_dir, tmp_path):
    rng = np.random.default_rng(4)
    image, _ = _disc_image(768, 768, _spread(150, 768, 768, rng, gap=16), seed=4)
    slide = write_svs(tmp_path / "big.svs", image, mpp=0.5)
    common = ["--slide", str(slide), "--detector", str(detector_dir), "--window", "64", "--min-tissue", "0",
              "--no-progress", "--threads", "1"]
    full = tmp_path / "full.geojson"
    assert main(["detect", "--out", str(full), *common]) == 0

    out = tmp_path / "resumed.geojson"
    work = tmp_path / ".resumed.geojson.work"
    proc = subprocess.Popen([sys.executable, "-m", "wsi_cosynth", "detect", "--out", str(out), *common],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(work.glob("w*.json"))) < 20:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(work.glob("w*.json")))
    assert proc.returncode == -signal.SIGKILL and 0 < finished < 144, "the run was not interrupted midway"
    assert not out.exists()  # never a half-written GeoJSON
    assert main(["detect", "--out", str(out), *common]) == 0
    assert out.read_bytes() == full.read_bytes()
    assert not work.exists()


def test_bad_input_is_one_line_and_exit_2(detector_dir, tmp_path, capsys):
    rng = np.random.default_rng(5)
    image, _ = _disc_image(128, 128, _spread(5, 128, 128, rng), seed=5)
    slide = write_svs(tmp_path / "s.svs", image, mpp=0.5)
    glass = write_svs(tmp_path / "glass.svs", np.full((256, 256, 3), 246, np.uint8), mpp=0.5)
    (tmp_path / "notadetector").mkdir()
    (tmp_path / "exists.geojson").write_text("{}")
    cases = [
        (["--slide", str(slide), "--detector", str(tmp_path / "notadetector")], "not a detector directory"),
        (["--slide", str(glass), "--detector", str(detector_dir)], "no tissue"),
        (["--slide", str(tmp_path / "missing.svs"), "--detector", str(detector_dir)], "missing.svs"),
    ]
    for k, (argv, message) in enumerate(cases):
        out = tmp_path / f"o{k}.geojson"
        assert main(["detect", *argv, "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not out.exists()
    assert main(["detect", "--slide", str(slide), "--detector", str(detector_dir), "--out",
                 str(tmp_path / "exists.geojson"), "--no-progress"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "exists.geojson").read_text() == "{}"
    assert not list(tmp_path.glob(".*.work"))


def _tiny_model(folder: Path, *, unknown_class: bool) -> Path:
    """An untrained tiny synthesis model (CoNSeP classes, 32-px tiles at 0.5 um/px)."""
    import torch

    from wsi_cosynth.models.config import CosynthConfig, load_config
    from wsi_cosynth.models.cosynth import CosynthModel
    from wsi_cosynth.taxonomy import get_taxonomy
    from wsi_cosynth.training.checkpoint import save_checkpoint

    base = load_config("tiny").to_dict()
    base["model"]["unknown_class"] = unknown_class
    torch.manual_seed(0)
    net = CosynthModel(CosynthConfig.from_dict(base), get_taxonomy("consep"), mpp=0.5, tile_size=32)
    return save_checkpoint(folder, net, steps=0)


def test_export_of_an_unannotated_slide_takes_its_layouts_from_the_detector(detector_dir, tmp_path, capsys):
    """``export --detector``: no annotations, so the slide's nuclei are detected first (one notice
    line, the detections written beside the output) and the synthetic tiles' layouts are them."""
    model = _tiny_model(tmp_path / "tiny", unknown_class=True)
    rng = np.random.default_rng(6)
    image, _ = _disc_image(128, 128, _spread(12, 128, 128, rng), seed=6)
    slide = write_svs(tmp_path / "bare.svs", image, mpp=0.5)
    out = tmp_path / "ds"
    argv = ["export", "--slide", str(slide), "--detector", str(detector_dir), "--model", str(model), "--format", "coco",
            "--out", str(out), "--steps", "1", "--min-tissue", "0", "--no-progress", "--threads", "1",
            "--colour-match", "none"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "no nuclei annotations: using the 12 nuclei found by the detector" in err
    detections = tmp_path / "ds.detections.geojson"
    assert len(json.loads(detections.read_text())["features"]) == 12
    index = json.loads((out / "annotations.json").read_text())
    assert index["images"]
    # A rerun of the same export reuses the detections of the same slide and detector.
    assert main([*argv, "--overwrite"]) == 0
    assert "using the 12 nuclei detected earlier" in capsys.readouterr().err


def test_export_detects_with_the_bundled_detector_by_default(tmp_path, capsys):
    """No ``--detector``: the bundled detector finds the slide's nuclei; ``--detector none`` keeps
    the old way (layouts resampled from the bundled CoNSeP layout model), and a model with no
    unknown class cannot draw the detector's classless nuclei: resampled, with a warning saying why."""
    rng = np.random.default_rng(7)
    image, _ = _disc_image(128, 128, _spread(12, 128, 128, rng), seed=7)
    slide = write_svs(tmp_path / "bare.svs", image, mpp=0.5)
    common = ["--slide", str(slide), "--format", "coco", "--steps", "1", "--min-tissue", "0", "--no-progress",
              "--threads", "1", "--colour-match", "none"]
    with_unknown = _tiny_model(tmp_path / "u", unknown_class=True)
    assert main(["export", *common, "--model", str(with_unknown), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "found by the detector default-detector" in err
    assert (tmp_path / "a.detections.geojson").is_file()

    assert main(["export", *common, "--model", str(with_unknown), "--out", str(tmp_path / "b"),
                 "--detector", "none"]) == 0
    assert "resampled from the layout model bundled with the package" in capsys.readouterr().err
    assert not (tmp_path / "b.detections.geojson").exists()

    classed = _tiny_model(tmp_path / "c", unknown_class=False)
    assert main(["export", *common, "--model", str(classed), "--out", str(tmp_path / "c_out")]) == 0
    err = capsys.readouterr().err
    assert "which has no unknown class: layouts are resampled instead" in err
    assert not (tmp_path / "c_out.detections.geojson").exists()


def test_resampled_layouts_are_fitted_to_the_slides_own_nuclei(tmp_path):
    """``--layouts resample`` on a slide with nuclei of its own fits the layout model to them: a
    dense slide gives dense layouts and a sparse one sparse layouts, each near its own density
    (the bundled CoNSeP model would give both the same)."""
    from wsi_cosynth.pipeline.layouts_for_slide import choose_layouts
    from wsi_cosynth.pipeline.planning import plan_slide
    from wsi_cosynth.taxonomy import get_taxonomy

    consep = get_taxonomy("consep")
    means = {}
    for name, n in (("sparse", 40), ("dense", 240)):
        rng = np.random.default_rng(n)
        centres = _spread(n, 512, 512, rng, gap=14)
        image, _ = _disc_image(512, 512, centres, seed=n)
        slide = write_svs(tmp_path / f"{name}.svs", image, mpp=0.5)
        outlines = [[[float(x + 5 * np.cos(a)), float(y + 5 * np.sin(a))] for a in np.linspace(0, 2 * np.pi, 9)]
                    for x, y in centres]
        annotations = tmp_path / f"{name}.geojson"
        annotations.write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
             "properties": {"objectType": "detection", "classification": {"name": "nucleus"}}} for ring in outlines]}))
        with plan_slide(slide, annotations, mpp=0.5, tile_size=64, min_tissue=0) as plan:
            layouts, notes = choose_layouts(plan, consep, layouts="resample", layout_model=None, class_map=None,
                                            default_class=None, max_tiles=None, seed=0, tissue=None,
                                            unknown_class=True)
        assert any(f"fitted to the slide's own {len(centres)} nuclei" in n for n in notes), notes
        assert all(lay.unclassified.all() for lay in layouts)  # classless nuclei stay the unknown class
        means[name] = (np.mean([len(lay) for lay in layouts]), len(centres) / len(layouts))
    for drawn, real in means.values():
        assert 0.7 * real <= drawn <= 1.3 * real, means
    assert means["dense"][0] > 3 * means["sparse"][0], means


@pytest.mark.parametrize("fmt", ["coco", "lizard", "pannuke", "geojson", "consep"])
def test_real_tiles_labelled_by_the_detector_say_so(detector_dir, tmp_path, capsys, fmt):
    """``--source real --labels detect``: the tiles' labels are the detector's nuclei, and the
    dataset's metadata (and each tile's provenance, where the format keeps one) names the detector."""
    from wsi_cosynth.exporters import read_dataset

    rng = np.random.default_rng(8)
    image, _ = _disc_image(128, 128, _spread(10, 128, 128, rng), seed=8)
    slide = write_svs(tmp_path / "bare.svs", image, mpp=0.5)
    out = tmp_path / fmt
    argv = ["export", "--slide", str(slide), "--source", "real", "--labels", "detect", "--detector", str(detector_dir),
            "--format", fmt, "--out", str(out), "--mpp", "0.5", "--tile-size", "64", "--min-tissue", "0",
            "--no-progress"]
    assert main(argv) == 0
    assert "using the 10 nuclei found by the detector d" in capsys.readouterr().err
    meta = json.loads((out / ("index.json" if fmt == "geojson" else "taxonomy.json")).read_text())
    assert meta["labels_by"].startswith("nuclei detector d (digest ")
    tiles = list(read_dataset(out, fmt))
    assert sum(t.n_nuclei for t in tiles) >= 10  # nuclei cut by tile borders count in both tiles
    if fmt in ("coco", "pannuke", "geojson"):
        assert all(t.provenance.labels_by == meta["labels_by"] for t in tiles)
    if fmt == "coco":
        assert json.loads((out / "annotations.json").read_text())["info"]["labels_by"] == meta["labels_by"]
    # Annotations given as well: the user must choose.
    assert main([*argv, "--annotations", str(tmp_path / "a.geojson"), "--out", str(tmp_path / "x")]) == 2
    assert "drop --annotations" in capsys.readouterr().err


def test_the_bundled_detector_finds_the_nuclei_of_held_out_consep_tiles(consep_dir):
    """The bundled detector on four tiles of CoNSeP's train_3 (held out of its training): its
    nuclei paired within 12 px of the annotated ones, F1 >= 0.5 (measured 0.66 on these four, 0.60
    without its speck filter; 0.75 over all held-out tiles of every source; benchmarks/detector.py).
    An untrained or broken detector scores near 0."""
    from wsi_cosynth.api import default_detector_path
    from wsi_cosynth.detection import load_detector
    from wsi_cosynth.evaluation.downstream import DetectionCounts
    from wsi_cosynth.instances import instance_centroids
    from wsi_cosynth.exporters import read_dataset

    detector = load_detector(default_detector_path())
    assert detector.mpp == 0.25 and detector.taxonomy.names == ("nucleus",)
    tiles = [t for t in read_dataset(consep_dir, "consep") if t.provenance.name.startswith("train_3_")][:4]
    assert len(tiles) == 4
    counts = DetectionCounts.empty()
    for tile in tiles:
        found = detector.predict(tile.image)
        assert 0 < found.confidence.min() and found.confidence.max() <= 1
        txy, pxy = instance_centroids(tile.instances), instance_centroids(found.instances)
        counts.add(txy, np.ones(len(txy), np.int64), pxy, np.ones(len(pxy), np.int64))
    f1, _ = counts.f1([1])
    assert f1 >= 0.5, f1


def test_teacher_agreement_keeps_tiles_whose_labels_match_their_image_and_drops_swapped_ones(consep_dir):
    """benchmarks/detector.py --min-agreement: the bundled detector finds a real tile's own nuclei
    (F1_d 0.76 when measured), not those of another tile's label put on it (0.33: dense nuclei pair
    by chance within 12 px), and a blank tile with a blank label agrees fully."""
    import importlib.util
    from dataclasses import replace

    from wsi_cosynth.api import default_detector_path
    from wsi_cosynth.detection import load_detector
    from wsi_cosynth.exporters import read_dataset

    spec = importlib.util.spec_from_file_location("detector_bench", REPO / "benchmarks" / "detector.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tiles = [t for t in read_dataset(consep_dir, "consep") if t.provenance.name.startswith("train_3_")]
    crowded = sorted(tiles, key=lambda t: -t.n_nuclei)[:2]
    swapped = replace(crowded[0], instances=np.ascontiguousarray(crowded[1].instances[::-1, ::-1]),
                      classes=crowded[1].classes)
    blank = replace(crowded[0], image=np.full_like(crowded[0].image, 240), instances=np.zeros_like(crowded[0].instances),
                    classes=np.zeros(0, np.int64))
    own, other, empty = bench.teacher_agreement(load_detector(default_detector_path()), [crowded[0], swapped, blank])
    assert own >= 0.5 and other <= own - 0.25 and empty == 1.0, (own, other, empty)


def test_speck_area_comes_from_whole_training_nuclei_and_specks_inside_the_image_are_dropped():
    """calibration.py: the speck area is a low percentile of the training labels' whole nuclei
    (a nucleus cut by the tile border does not count); drop_specks removes smaller objects unless
    they touch the image border, and renumbers the rest 1..N."""
    from wsi_cosynth.detection.calibration import drop_specks, speck_area
    from wsi_cosynth.records import LabelledTile, Provenance
    from wsi_cosynth.taxonomy import get_taxonomy

    rng = np.random.default_rng(0)
    centres = _spread(20, 256, 256, rng, gap=24)
    _, inst = _disc_image(256, 256, centres, seed=0)  # whole discs of radius 5: 69-81 px
    smallest = int(np.bincount(inst.ravel())[1:].min())
    inst[:3, :3] = inst.max() + 1  # a 9-px sliver in the corner: cut by the border, not a nucleus size
    tile = LabelledTile(image=np.zeros((256, 256, 3), np.uint8), instances=inst, classes=np.ones(int(inst.max()), np.int64),
                        taxonomy=get_taxonomy("nucleus"), provenance=Provenance(name="t", mpp=0.5))
    assert smallest > 60 and speck_area([tile], 0.0) == smallest <= speck_area([tile], 1.0) <= 81

    found = np.zeros((64, 64), np.int32)
    found[10:20, 10:20] = 1  # 100 px: a nucleus
    found[30:32, 30:33] = 2  # 6 px inside: a speck
    found[0:2, 40:42] = 3  # 4 px on the border: kept (a nucleus cut by the image edge)
    found[50:60, 50:60] = 4
    classes = np.array([5, 6, 7, 8])
    kept_map, kept_classes = drop_specks(found, classes, 40)
    assert kept_classes.tolist() == [5, 7, 8]
    assert sorted(np.unique(kept_map).tolist()) == [0, 1, 2, 3]
    assert (kept_map[30:32, 30:33] == 0).all() and (kept_map[0:2, 40:42] == 2).all() and (kept_map[50:60, 50:60] == 3).all()
    assert drop_specks(found, classes, 0)[1].tolist() == [5, 6, 7, 8]


def test_a_detectors_speck_filter_is_saved_applied_and_bounded(detector_dir, tmp_path):
    """``min_area`` travels in detector.json (0 when a file predates it), prediction honours it,
    and an absurd value is refused with a line naming the file."""
    from dataclasses import replace

    from wsi_cosynth.detection import load_detector
    from wsi_cosynth.errors import CosynthError

    detector = load_detector(detector_dir)
    rng = np.random.default_rng(11)
    image, truth = _disc_image(128, 128, _spread(8, 128, 128, rng), seed=11)
    areas = np.bincount(detector.predict(image).instances.ravel())[1:]
    assert len(areas) == 8
    strict = replace(detector, min_area=int(areas.max()) + 1)  # larger than every disc found
    found = strict.predict(image)
    touching = np.unique(np.concatenate([found.instances[0], found.instances[-1], found.instances[:, 0],
                                         found.instances[:, -1]]))
    assert len(found) == len(touching[touching > 0]) == len(found.classes) == len(found.confidence)
    reloaded = load_detector(strict.save(tmp_path / "strict"))
    assert reloaded.min_area == strict.min_area
    meta = json.loads((tmp_path / "strict" / "detector.json").read_text())
    meta.pop("min_area")
    (tmp_path / "strict" / "detector.json").write_text(json.dumps(meta))
    assert load_detector(tmp_path / "strict").min_area == 0
    meta["min_area"] = 10**6
    (tmp_path / "strict" / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(CosynthError, match="min_area"):
        load_detector(tmp_path / "strict")
