"""Round trips CoNSeP / NuCLS tiles through every written format, checked by the consumers' rules."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from consumer_checks import (  # noqa: E402
    check_coco,
    check_lizard,
    check_pannuke,
    best_matches,
    check_qupath_geojson,
    matched_classes_equal,
    same_up_to_relabelling,
)

from wsi_cosynth.exporters import open_writer, read_dataset  # noqa: E402
from wsi_cosynth.records import LabelledTile, Provenance, SlidePlacement  # noqa: E402
from wsi_cosynth.taxonomy import get_taxonomy  # noqa: E402

# A fixed subset keeps the default suite fast; the full 432 tiles run under -m slow.
SUBSET = 24
EXACT = [("lizard", {}), ("pannuke", {}), ("coco", {"segmentation": "rle"})]
POLYGON = [("geojson", {}), ("coco", {"segmentation": "polygon"})]


def _source_tiles(consep_dir: Path, nucls_dir: Path, n: int | None) -> list[LabelledTile]:
    consep = read_dataset(consep_dir, "consep")
    tiles = list(consep if n is None else itertools.islice(consep, n))
    return tiles, list(read_dataset(nucls_dir, "cellvit"))


def _write_read(tiles, fmt, options, out: Path) -> list[LabelledTile]:
    with open_writer(fmt, out, tiles[0].taxonomy, **options) as w:
        for t in tiles:
            w.add(t)
    return list(read_dataset(out, fmt))


def _check_consumer(fmt: str, out: Path) -> None:
    if fmt == "coco":
        assert check_coco(out)["segm_ap"] == 1.0
    elif fmt == "lizard":
        check_lizard(out)
    elif fmt == "pannuke":
        check_pannuke(out)
    else:
        for f in sorted((out / "tiles").glob("*.geojson")):
            check_qupath_geojson(f)


def _roundtrip_all(tmp_path: Path, sets: list[list[LabelledTile]]) -> dict:
    ious: dict[str, list[float]] = {}
    for k, tiles in enumerate(sets):
        for fmt, opts in EXACT:
            back = _write_read(tiles, fmt, opts, tmp_path / f"{fmt}{opts.get('segmentation', '')}{k}")
            assert [b.provenance.name for b in back] == [t.provenance.name for t in tiles]
            for a, b in zip(tiles, back):
                assert same_up_to_relabelling(a.instances, b.instances), (fmt, a.provenance.name)
                assert matched_classes_equal(a.instances, a.classes, b.instances, b.classes), (fmt, a.provenance.name)
                assert b.taxonomy == a.taxonomy
                assert np.array_equal(a.image, b.image)
            _check_consumer(fmt, tmp_path / f"{fmt}{opts.get('segmentation', '')}{k}")
        for fmt, opts in POLYGON:
            key = f"{fmt}{opts.get('segmentation', '')}"
            back = _write_read(tiles, fmt, opts, tmp_path / f"{key}{k}")
            for a, b in zip(tiles, back):
                iou, match = best_matches(a.instances, b.instances)
                ious.setdefault(key, []).extend(iou.tolist())
                # Every well-matched nucleus keeps its class.
                ok = iou >= 0.5
                ref_ids = np.unique(a.instances)[1:]
                assert np.array_equal(a.classes[ref_ids[ok] - 1], b.classes[match[ok] - 1]), (key, a.provenance.name)
            _check_consumer(fmt, tmp_path / f"{key}{k}")
    for key, v in ious.items():
        v = np.asarray(v)
        print(f"{key}: per-instance IoU median {np.median(v):.4f} min {v.min():.4f} over {len(v)} nuclei")
        assert np.median(v) >= 0.95, key
    return ious


def test_roundtrip_subset(tmp_path, consep_dir, nucls_dir):
    consep, nucls = _source_tiles(consep_dir, nucls_dir, SUBSET)
    assert sum(t.n_nuclei for t in consep) > 500 and len(nucls) == 15
    _roundtrip_all(tmp_path, [consep, nucls])


@pytest.mark.slow
def test_roundtrip_full_consep(tmp_path, consep_dir, nucls_dir):
    consep, nucls = _source_tiles(consep_dir, nucls_dir, None)
    assert len(consep) == 432
    _roundtrip_all(tmp_path, [consep, nucls])


def _many_nuclei_tile() -> LabelledTile:
    """A 600 x 600 tile of 2 x 2-pixel nuclei: 90,000 instances (> 65,535, needs int32)."""
    h = w = 600
    r, c = np.mgrid[0:h, 0:w]
    inst = ((r // 2) * (w // 2) + (c // 2) + 1).astype(np.int32)
    n = int(inst.max())
    rng = np.random.default_rng(0)
    return LabelledTile(
        image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        instances=inst,
        classes=rng.integers(1, 5, n),
        taxonomy=get_taxonomy("pannuke"),
        provenance=Provenance(name="many"),
    )


@pytest.mark.parametrize("fmt", ["lizard", "pannuke", "coco"])
def test_more_than_65535_nuclei_survive(tmp_path, fmt):
    tile = _many_nuclei_tile()
    assert tile.n_nuclei == 90_000
    (back,) = _write_read([tile], fmt, {}, tmp_path / fmt)
    assert back.n_nuclei == 90_000
    assert np.array_equal(back.instances, tile.instances)  # ascending-id order is kept
    assert np.array_equal(back.classes, tile.classes)


def test_geojson_slide_placement_roundtrip(tmp_path, consep_dir):
    tiles = list(itertools.islice(read_dataset(consep_dir, "consep"), 2))
    placed = [
        LabelledTile(t.image, t.instances, t.classes, t.taxonomy,
                     Provenance(name=t.provenance.name, source="/slides/case1.svs", x_slide=1000.0 + 512 * i,
                                y_slide=2000.0, mpp=0.25),
                     placement=SlidePlacement(1000.0 + 512 * i, 2000.0, 2.0))
        for i, t in enumerate(tiles)
    ]
    back = _write_read(placed, "geojson", {}, tmp_path / "gj")
    for a, b in zip(placed, back):
        assert b.placement == a.placement
        assert same_up_to_relabelling(a.instances, b.instances)
    merged = tmp_path / "gj" / "case1.geojson"
    check_qupath_geojson(merged)
    import json

    feats = json.loads(merged.read_text())["features"]
    assert len(feats) == sum(t.n_nuclei for t in tiles)
    xs = [pt[0] for f in feats for pt in (f["geometry"]["coordinates"][0] if f["geometry"]["type"] == "Polygon"
                                            else f["geometry"]["coordinates"][0][0])]
    assert min(xs) >= 1000.0 and max(xs) <= 1000.0 + 512 + 512  # level-0 slide pixels, scale 2


def test_writer_leaves_nothing_on_error(tmp_path, consep_dir):
    (tile,) = list(itertools.islice(read_dataset(consep_dir, "consep"), 1))
    out = tmp_path / "coco"
    with pytest.raises(RuntimeError):
        with open_writer("coco", out, tile.taxonomy) as w:
            w.add(tile)
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_coco_streamed_annotations_are_one_compact_json(tmp_path, consep_dir):
    """Annotations are spooled to disk while tiles arrive; the file is still exactly json.dumps of the dataset."""
    import json

    tiles = list(itertools.islice(read_dataset(consep_dir, "consep"), 3))
    out = tmp_path / "coco"
    with open_writer("coco", out, tiles[0].taxonomy) as w:
        for t in tiles:
            w.add(t)
    text = (out / "annotations.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, separators=(",", ":"))
    assert list(data) == ["info", "licenses", "images", "annotations", "categories"]
    assert [a["id"] for a in data["annotations"]] == list(range(1, sum(t.n_nuclei for t in tiles) + 1))
    assert sorted(p.name for p in out.iterdir()) == ["annotations.json", "images", "taxonomy.json"]


@pytest.mark.parametrize("fmt", ["coco", "lizard", "geojson"])
def test_background_image_write_failure_surfaces_and_leaves_nothing(tmp_path, consep_dir, fmt):
    """Images are PNG-encoded in background threads: a failed write still fails the export cleanly."""
    import shutil

    (tile,) = list(itertools.islice(read_dataset(consep_dir, "consep"), 1))
    out = tmp_path / fmt
    with pytest.raises(OSError):
        with open_writer(fmt, out, tile.taxonomy) as w:
            shutil.rmtree(w.root / "images")  # the next image write cannot succeed
            w.add(tile)
    assert not out.exists() and list(tmp_path.iterdir()) == []
