"""Checks that a written dataset is accepted by the tools that consume its format.

Each ``check_*`` raises AssertionError naming the file and rule broken, and returns a small dict
of what it measured. They follow docs/FORMATS.md: pycocotools COCO() + COCOeval (segm AP of the ground
truth scored against itself), Lizard's official read_label.py logic (rows matched by id value),
PanNuke's array conventions, and QuPath's GeoJSON import rules (docs/FORMATS.md 4.3).
Also: ``same_up_to_relabelling`` and ``instance_ious`` for round-trip comparisons.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import uuid
from pathlib import Path

import numpy as np


# ----------------------------------------------------------------------------------------- helpers
def same_up_to_relabelling(a: np.ndarray, b: np.ndarray) -> bool:
    """True if two instance maps differ only by a bijective renaming of non-zero ids."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]], 1), axis=0)
    return len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))


def matched_classes_equal(a_inst, a_cls, b_inst, b_cls) -> bool:
    """Classes agree for every instance pair that shares pixels (maps assumed relabellings)."""
    a_inst, b_inst = np.asarray(a_inst).ravel(), np.asarray(b_inst).ravel()
    fg = a_inst > 0
    pairs = np.unique(np.stack([a_inst[fg], b_inst[fg]], 1), axis=0)
    return bool(np.all(np.asarray(a_cls)[pairs[:, 0] - 1] == np.asarray(b_cls)[pairs[:, 1] - 1]))


def instance_ious(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """For every reference instance, IoU with the best-overlapping instance of ``got`` (0 if none)."""
    return best_matches(ref, got)[0]


def best_matches(ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per present reference instance: (best IoU, id in ``got`` of that match or 0)."""
    ref, got = np.asarray(ref).ravel(), np.asarray(got).ravel()
    n_ref = int(ref.max()) if ref.size else 0
    if n_ref == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    area_ref = np.bincount(ref, minlength=n_ref + 1)
    area_got = np.bincount(got, minlength=int(got.max()) + 1)
    both = (ref > 0) & (got > 0)
    pairs, inter = np.unique(np.stack([ref[both], got[both]], 1), axis=0, return_counts=True)
    best = np.zeros(n_ref + 1)
    best_id = np.zeros(n_ref + 1, dtype=np.int64)
    for (r, g), i in zip(pairs.tolist(), inter.tolist()):
        iou = i / (area_ref[r] + area_got[g] - i)
        if iou > best[r]:
            best[r], best_id[r] = iou, g
    present = area_ref[1:] > 0
    return best[1:][present], best_id[1:][present]


# ----------------------------------------------------------------------------------------- COCO
def check_coco(out_dir: str | Path) -> dict:
    """pycocotools loads the file; structure rules of docs/FORMATS.md 3; self-evaluation segm AP = 1."""
    import pycocotools.mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from PIL import Image

    path = Path(out_dir) / "annotations.json"
    data = json.loads(path.read_text())
    assert "info" in data, f"{path}: no 'info'"
    for key in ("images", "annotations", "categories"):
        assert key in data, f"{path}: no {key!r}"
    cat_ids = [c["id"] for c in data["categories"]]
    assert cat_ids == list(range(1, len(cat_ids) + 1)), f"{path}: category ids {cat_ids} not 1..K"
    ann_ids = [a["id"] for a in data["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids) and min(ann_ids, default=1) >= 1, f"{path}: annotation ids"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
    for img in data["images"]:
        with Image.open(Path(out_dir) / "images" / img["file_name"]) as im:
            assert im.size == (img["width"], img["height"]), f"{img['file_name']}: size != COCO record"
    max_per_image = 1
    for img_id in gt.getImgIds():
        max_per_image = max(max_per_image, len(gt.getAnnIds(imgIds=[img_id])))
    for ann in data["annotations"]:
        assert ann["iscrowd"] == 0, f"{path}: annotation {ann['id']} iscrowd"
        seg = ann["segmentation"]
        if isinstance(seg, list):
            assert seg and all(len(p) >= 6 and len(p) % 2 == 0 for p in seg), f"annotation {ann['id']}: polygon"
        else:
            assert isinstance(seg["counts"], str), f"annotation {ann['id']}: RLE counts must be str"
            assert ann["area"] == float(mask_utils.area(seg)), f"annotation {ann['id']}: area != mask area"
            assert np.allclose(ann["bbox"], mask_utils.toBbox(seg)), f"annotation {ann['id']}: bbox"
        x, y, w, h = ann["bbox"]
        assert w >= 1 and h >= 1 and ann["area"] > 0, f"annotation {ann['id']}: empty box/area"
    if not data["annotations"]:
        return {"segm_ap": None, "n_annotations": 0}
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": gt.annToRLE(a), "score": 1.0}
        for a in data["annotations"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "segm")
        ev.params.maxDets = [1, 10, max_per_image]
        ev.evaluate()
        ev.accumulate()
    # AP@[.5:.95], all areas, at the largest maxDets (stats[0] is hard-wired to 100 detections).
    prec = ev.eval["precision"][:, :, :, 0, -1]
    ap = float(prec[prec > -1].mean())
    assert abs(ap - 1.0) < 1e-9, f"{path}: self-evaluation segm AP = {ap:.3f}, expected 1.000"
    return {"segm_ap": ap, "n_annotations": len(results)}


# ----------------------------------------------------------------------------------------- Lizard
def check_lizard(out_dir: str | Path) -> dict:
    """Official read_label.py logic: per id value in inst_map, the row ``id.index(v)`` describes it."""
    import scipy.io
    from PIL import Image

    root = Path(out_dir)
    with open(root / "info.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Filename", "Source", "Split"], f"{root / 'info.csv'}: header {rows[0]}"
    n_nuclei = 0
    for name, _src, split in rows[1:]:
        assert "-" not in name, f"info.csv: stem {name!r} contains '-'"
        assert split in {"1", "2", "3"}, f"info.csv: split {split!r}"
        label = scipy.io.loadmat(root / "labels" / f"{name}.mat")
        inst = label["inst_map"]
        assert inst.dtype == np.int32, f"{name}.mat: inst_map dtype {inst.dtype}"
        with Image.open(root / "images" / f"{name}.png") as im:
            assert im.size == (inst.shape[1], inst.shape[0]), f"{name}: image/label size"
        ids = np.squeeze(label["id"]).reshape(-1).tolist()
        classes = np.squeeze(label["class"]).reshape(-1)
        bboxes = label["bbox"].reshape(-1, 4)
        centroids = label["centroid"].reshape(-1, 2)
        for v in np.unique(inst)[1:]:
            idx = ids.index(int(v))
            assert classes[idx] >= 1, f"{name}.mat: class of id {v}"
            rr, cc = np.nonzero(inst == v)
            y1, y2, x1, x2 = bboxes[idx]
            assert (y1, y2, x1, x2) == (rr.min(), rr.max() + 1, cc.min(), cc.max() + 1), f"{name}.mat: bbox of {v}"
            assert np.allclose(centroids[idx], (cc.mean(), rr.mean())), f"{name}.mat: centroid (x, y) of {v}"
            n_nuclei += 1
    return {"n_tiles": len(rows) - 1, "n_nuclei": n_nuclei}


# ----------------------------------------------------------------------------------------- PanNuke
def check_pannuke(out_dir: str | Path) -> dict:
    """PanNuke conventions: dtypes, shapes, ids unique across channels, background channel, types."""
    root = Path(out_dir)
    images = np.load(root / "images.npy", mmap_mode="r")
    masks = np.load(root / "masks.npy", mmap_mode="r")
    types = np.load(root / "types.npy")  # must load without allow_pickle
    assert images.dtype == np.float64 and masks.dtype == np.float64, "PanNuke arrays must be float64"
    assert images.ndim == 4 and images.shape[3] == 3, f"images shape {images.shape}"
    assert masks.shape == images.shape[:3] + (6,), f"masks shape {masks.shape}"
    assert types.dtype.kind == "U" and types.shape == (len(images),), f"types {types.dtype} {types.shape}"
    n_nuclei = 0
    for i in range(len(images)):
        img = np.asarray(images[i])
        assert img.min() >= 0 and img.max() <= 255 and np.all(img == np.round(img)), f"image {i} range"
        m = np.asarray(masks[i])
        inst = m[..., :5]
        # InstanSeg's assertion: every id lives in exactly one channel.
        assert np.array_equal(np.unique(inst), np.unique(inst.max(-1))), f"tile {i}: ids shared across channels"
        assert ((inst > 0).sum(-1) <= 1).all(), f"tile {i}: pixel in two channels"
        assert np.array_equal(m[..., 5], (inst.max(-1) == 0).astype(np.float64)), f"tile {i}: channel 5"
        n_nuclei += len(np.unique(inst)) - 1
    return {"n_tiles": len(images), "n_nuclei": n_nuclei}


# ----------------------------------------------------------------------------------------- QuPath
_OBJECT_TYPES = {"annotation", "detection", "cell", "tile", "tmaCore", "root"}


def _no_constants(name: str) -> float:
    raise AssertionError(f"non-strict JSON constant {name}")


def check_qupath_geojson(path: str | Path) -> dict:
    """Every Feature obeys QuPath's import rules (docs/FORMATS.md 4.3) and the writer recommendation."""
    import shapely.geometry

    p = Path(path)
    data = json.loads(p.read_text(), parse_constant=_no_constants)
    assert data.get("type") == "FeatureCollection", f"{p}: not a FeatureCollection"
    for i, feat in enumerate(data["features"]):
        where = f"{p} feature {i}"
        assert feat.get("type") == "Feature", where
        uuid.UUID(feat["id"])  # raises on a non-UUID id
        props = feat["properties"]
        assert props.get("objectType") in _OBJECT_TYPES, f"{where}: objectType {props.get('objectType')!r}"
        cls = props.get("classification")
        if cls is not None and not isinstance(cls, str):
            assert ("name" in cls or "names" in cls) and "color" in cls, f"{where}: classification {cls}"
            assert isinstance(cls["color"], list) and len(cls["color"]) in (3, 4), f"{where}: colour"
        for k, v in (props.get("measurements") or {}).items():
            assert isinstance(v, (int, float)) and math.isfinite(v), f"{where}: measurement {k}={v!r}"
        geom = feat["geometry"]
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        assert geom["type"] in ("Polygon", "MultiPolygon"), f"{where}: geometry {geom['type']}"
        for rings in polys:
            for ring in rings:
                assert len(ring) >= 4 and ring[0] == ring[-1], f"{where}: ring not closed or < 4 positions"
                assert all(round(c, 2) == c for xy in ring for c in xy), f"{where}: > 2 decimals"
        assert shapely.geometry.shape(geom).is_valid, f"{where}: invalid geometry"
    return {"n_features": len(data["features"])}


# ----------------------------------------------------------------------------------------- TIAToolbox
_TIATOOLBOX_TYPES = {"Point", "LineString", "Polygon"}


def check_tiatoolbox_geojson(path: str | Path) -> dict:
    """TIAToolbox's store rules (``DictionaryStore.from_geojson``): every Feature's geometry is a
    Point, LineString or Polygon ("Invalid geometry type" otherwise), with closed, valid rings and
    a properties object."""
    import shapely.geometry

    p = Path(path)
    data = json.loads(p.read_text(), parse_constant=_no_constants)
    features = data["features"] if isinstance(data, dict) else data
    for i, feat in enumerate(features):
        where = f"{p} feature {i}"
        geom = feat["geometry"]
        assert geom["type"] in _TIATOOLBOX_TYPES, f"{where}: geometry type {geom['type']} (TIAToolbox: Invalid geometry type)"
        assert isinstance(feat.get("properties", {}), dict), f"{where}: properties"
        if geom["type"] == "Polygon":
            for ring in geom["coordinates"]:
                assert len(ring) >= 4 and ring[0] == ring[-1], f"{where}: ring not closed"
        shape = shapely.geometry.shape(geom)
        assert shape.is_valid and not shape.is_empty, f"{where}: invalid or empty geometry"
    return {"n_features": len(features)}


# ----------------------------------------------------------------------------------------- HoVer-Net
# HoVer-Net's dataset.py __CoNSeP.load_ann(..., with_type=True): merge of CoNSeP's 7 type codes.
_HOVERNET_CONSEP_MERGE = {3: 3, 4: 3, 5: 4, 6: 4, 7: 4}


def check_hovernet_mat(out_dir: str | Path, *, consep_loader: bool = True) -> dict:
    """HoVer-Net's loaders: ``labels/<stem>.mat`` with inst_map, type_map (stacked as int32 next to
    the image), inst_type (N, 1) and inst_centroid (N, 2) (compute_stats.py); each instance's
    type_map pixels hold its inst_type row. Returns the classes the ``consep`` loader (with its
    merge) or a plain loader sees, per tile stem: {stem: {inst id: class}}."""
    import scipy.io
    from PIL import Image

    root = Path(out_dir)
    seen: dict[str, dict[int, int]] = {}
    for mat_path in sorted((root / "labels").glob("*.mat")):
        stem = mat_path.stem
        mat = scipy.io.loadmat(mat_path)
        for key in ("inst_map", "type_map", "inst_type", "inst_centroid"):
            assert key in mat, f"{mat_path}: no {key}"
        inst, tmap = mat["inst_map"], mat["type_map"]
        with Image.open(root / "images" / f"{stem}.png") as im:
            assert im.size == (inst.shape[1], inst.shape[0]), f"{stem}: image/label size"
        assert inst.shape == tmap.shape and inst.dtype.kind in "iu" and tmap.dtype.kind in "iu", f"{stem}: maps"
        ann = np.dstack([inst, tmap]).astype("int32")  # what load_ann returns
        ids = [int(v) for v in np.unique(ann[..., 0]) if v]
        inst_type = mat["inst_type"].astype("int32")
        centroid = mat["inst_centroid"].astype("float32")
        assert inst_type.shape == (len(ids), 1), f"{stem}: inst_type shape {inst_type.shape}"
        assert centroid.shape == (len(ids), 2), f"{stem}: inst_centroid shape {centroid.shape}"
        assert ids == list(range(1, len(ids) + 1)), f"{stem}: ids not 1..N"
        classes: dict[int, int] = {}
        for k, v in enumerate(ids):
            rr, cc = np.nonzero(ann[..., 0] == v)
            types = np.unique(ann[rr, cc, 1])
            assert types.tolist() == [int(inst_type[k, 0])], f"{stem}: type_map of id {v} is {types} not inst_type"
            assert np.allclose(centroid[k], (cc.mean(), rr.mean()), atol=1e-3), f"{stem}: centroid of {v}"
            code = int(types[0])
            classes[v] = _HOVERNET_CONSEP_MERGE.get(code, code) if consep_loader else code
        seen[stem] = classes
    return seen
