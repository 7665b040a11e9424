"""COCO instance segmentation (docs/FORMATS.md section 3): writer and reader.

Layout written::

    out/annotations.json     one COCO dataset: info, licenses, images, annotations, categories
    out/images/<name>.png    RGB tiles; ``file_name`` is relative to out/images/
    out/taxonomy.json        the class set (names and colours), for a lossless read back

``images[].wsi_cosynth`` keeps each tile's provenance (and slide placement); consumers ignore it.
Annotations are spooled to a scratch file as tiles arrive and streamed into ``annotations.json``
at the end, so a slide with millions of nuclei does not hold them all in memory.
Annotation and image ids start at 1; ``iscrowd`` 0; ``area`` is the mask pixel count
(``pycocotools.mask.area``); ``bbox`` is [x, y, w, h]; ``segmentation`` is compressed RLE
(``counts`` a str; lossless) or, with ``segmentation="polygon"``, polygons traced on the
pixel-corner grid (each part >= 4 vertices, so >= 8 coordinates, even length; holes are lost
because COCO merges polygon parts). Categories are the taxonomy's classes, ids 1..K.

Reading: ``path`` is a directory holding ``annotations.json`` or the JSON file itself; images are
looked up by ``file_name`` under ``images/`` and then beside the JSON (``images_dir`` overrides).
RLE (compressed or not) and polygon segmentations are accepted; ``iscrowd`` 1 regions are
skipped; overlapping instances are painted in annotation order (later on top) and an instance
left with no pixel is dropped. :func:`read_coco_labels` gives the labels without images.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import CosynthError, optional_file
from ..geometry import mask_to_polygons, rasterize_polygon
from ..records import LabelledTile, Provenance, relabel_contiguous
from ..taxonomy import Taxonomy
from ..validation import placement_from, provenance_from, report_dropped, ring_problem
from ._common import LABELS_BY_KEY, MIN_IMAGE_SIDE, BackgroundJobs, DatasetWriter, load_image, load_json, write_taxonomy_file
from ._rle import boxes_and_areas_from_runs, counts_from_runs, decode_counts_string, instance_runs, paint_counts

ANNOTATIONS = "annotations.json"
_SPOOL = ".annotations.spool"
_COMPACT = {"separators": (",", ":")}


class Writer(DatasetWriter):
    """COCO writer; ``segmentation`` is ``"rle"`` (default) or ``"polygon"``."""

    fmt = "coco"
    ENCODE_BACKLOG = 8

    def __init__(
        self, out_dir: Path, taxonomy: Taxonomy, *, segmentation: Literal["rle", "polygon"] = "rle", **kw: Any
    ) -> None:
        if segmentation not in ("rle", "polygon"):
            raise CosynthError(f"coco segmentation must be 'rle' or 'polygon', got {segmentation!r}")
        super().__init__(out_dir, taxonomy, **kw)
        self.segmentation = segmentation
        (self.root / "images").mkdir()
        self.images: list[dict] = []
        self.n_annotations = 0
        # One line per tile of compact JSON objects; rewritten into annotations.json by _finish.
        self._spool = open(self.root / _SPOOL, "w", encoding="utf-8")
        self._encoding = BackgroundJobs("coco-encode", threads=1, backlog=self.ENCODE_BACKLOG)

    def _add(self, tile: LabelledTile) -> None:
        h, w = tile.size
        image_id = len(self.images) + 1
        file_name = f"{tile.provenance.name}.png"
        self._save_image(self.root / "images" / file_name, tile.image)
        meta: dict[str, Any] = {"provenance": tile.provenance.to_dict()}
        if tile.placement is not None:
            p = tile.placement
            meta["placement"] = {"x0": p.x0, "y0": p.y0, "scale": p.scale}
        self.images.append({"id": image_id, "file_name": file_name, "height": h, "width": w, "wsi_cosynth": meta})
        n = tile.n_nuclei
        if n == 0:
            return
        # Encoding runs in one background thread (FIFO: annotation ids and bytes as if inline),
        # at most ENCODE_BACKLOG tiles behind, so it overlaps reading the next tile.
        self._encoding.submit(self._encode, tile.instances.copy(), tile.classes.copy(), image_id)

    def _encode(self, instances: np.ndarray, classes: np.ndarray, image_id: int) -> None:
        """Spool the annotations of one tile (instance ids 1..N, classes (N,))."""
        import pycocotools.mask as mask_utils

        h, w = instances.shape
        n = len(classes)
        runs = instance_runs(instances)  # one pass over the map gives masks, areas and boxes
        # Mask area and box from the runs themselves: equal to pycocotools.mask.area/toBbox,
        # which overflow on more than 65,535 objects in one call.
        boxes_rc, areas = boxes_and_areas_from_runs(*runs, n, h)
        if self.segmentation == "rle":
            counts = counts_from_runs(*runs, n, h * w)
            rles = mask_utils.frPyObjects([{"size": [h, w], "counts": c} for c in counts], h, w)
        boxes = np.stack([boxes_rc[:, 2], boxes_rc[:, 0], boxes_rc[:, 3] - boxes_rc[:, 2],
                          boxes_rc[:, 1] - boxes_rc[:, 0]], axis=1)
        # Python numbers converted once per tile, not one numpy scalar per field (the same JSON).
        categories, area_list = classes.tolist(), areas.astype(np.float64).tolist()
        bbox_list = boxes.astype(np.float64).tolist()
        first_id = self.n_annotations + 1
        annotations = []
        for k in range(n):
            if self.segmentation == "rle":
                seg: Any = {"size": [h, w], "counts": rles[k]["counts"].decode("ascii")}
            else:
                seg = _polygons(instances, k + 1, boxes_rc[k])
            annotations.append({
                "id": first_id + k,
                "image_id": image_id,
                "category_id": categories[k],
                "iscrowd": 0,
                "area": area_list[k],
                "bbox": bbox_list[k],
                "segmentation": seg,
            })
        self.n_annotations += n
        # One spool line per tile: the tile's objects joined by commas, as in the final list.
        self._spool.write(json.dumps(annotations, **_COMPACT)[1:-1] + "\n")

    def _wait_for_encoding(self, *, raise_errors: bool = True) -> None:
        self._encoding.drain(raise_errors=raise_errors)

    def _finish(self) -> None:
        self._wait_for_encoding()
        self._spool.close()
        info = {"description": "nuclei instance segmentation exported by wsi-cosynth", "version": "1.0",
                **({LABELS_BY_KEY: self.labels_by} if self.labels_by is not None else {})}
        categories = [
            {"id": i + 1, "name": name, "supercategory": "nucleus", "color": list(color)}
            for i, (name, color) in enumerate(zip(self.taxonomy.names, self.taxonomy.colors))
        ]
        spool = self.root / _SPOOL
        # The same bytes json.dumps would give for the whole dict, written piece by piece.
        with open(self.root / ANNOTATIONS, "w", encoding="utf-8") as out, open(spool, encoding="utf-8") as lines:
            out.write('{"info":' + json.dumps(info, **_COMPACT) + ',"licenses":[],"images":')
            out.write(json.dumps(self.images, **_COMPACT) + ',"annotations":[')
            for i, line in enumerate(lines):
                out.write(("," if i else "") + line.rstrip("\n"))
            out.write('],"categories":' + json.dumps(categories, **_COMPACT) + "}")
        spool.unlink()
        write_taxonomy_file(self.root, self.taxonomy)

    def _release(self) -> None:
        self._wait_for_encoding(raise_errors=False)
        self._spool.close()


def _polygons(instances: np.ndarray, inst_id: int, box_rc: np.ndarray) -> list[list[float]]:
    """COCO polygon parts of one instance, traced on the pixel-corner grid."""
    r0, r1, c0, c1 = (int(v) for v in box_rc)
    crop = instances[r0:r1, c0:c1] == inst_id
    parts = []
    for poly in mask_to_polygons(crop, offset_xy=(c0, r0)):
        xy = np.asarray(poly.exterior.coords)[:-1]  # COCO rings are implicitly closed
        flat = [float(v) for v in xy.ravel()]
        if len(flat) >= 6 and len(flat) % 2 == 0:
            parts.append(flat)
    if not parts:  # unreachable for pixel masks (a pixel is 4 corners), kept as a safe fallback
        parts.append([float(c0), float(r0), float(c1), float(r0), float(c1), float(r1), float(c0), float(r1)])
    return parts


# ----------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class CocoImageLabels:
    """The labels of one COCO image: instance map (ids 1..N), classes in ``taxonomy``, the record."""

    record: dict
    instances: np.ndarray
    classes: np.ndarray
    taxonomy: Taxonomy


def _json_path(path: Path) -> Path:
    if path.is_dir():
        return path / ANNOTATIONS
    return path


def _taxonomy(categories: list[dict], path: Path) -> tuple[Taxonomy, dict[int, int]]:
    """Taxonomy from the categories (sorted by id) and category id -> class id 1..K."""
    if not categories:
        raise CosynthError(f"{path}: no categories")
    for c in categories:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int):
            raise CosynthError(f"{path}: every category needs an integer 'id', got {c!r:.80}")
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise CosynthError(f"{path}: duplicate category id {next(i for i in ids if ids.count(i) > 1)}")
    cats = sorted(categories, key=lambda c: int(c["id"]))
    names = [c.get("name", f"category_{c['id']}") for c in cats]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise CosynthError(f"{path}: category names must be non-empty strings, got {names[:8]}")
    colors = []
    for i, c in enumerate(cats):
        col = c.get("color")
        # A colour that is not three 0..255 integers falls back to the default palette.
        ok = isinstance(col, list) and len(col) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in col)
        colors.append(tuple(col) if ok else Taxonomy.from_names("x", names).colors[i])
    stored = path.parent / "taxonomy.json"
    key = Taxonomy.from_dict(load_json(stored)).key if optional_file(stored, "taxonomy file") else path.stem
    try:
        tax = Taxonomy(key=key, names=tuple(names), colors=tuple(colors))  # type: ignore[arg-type]
    except CosynthError as exc:  # e.g. two categories whose names differ only in case
        raise CosynthError(f"{path}: {exc}") from None
    return tax, {int(c["id"]): i + 1 for i, c in enumerate(cats)}


def read_coco_labels(path: str | Path) -> Iterator[CocoImageLabels]:
    """Instance maps and classes per image of a COCO dataset JSON (or a results list with RLE)."""
    p = _json_path(Path(path))
    data = load_json(p)
    if isinstance(data, list):  # a results file: annotations only, sizes from the RLE
        data = _from_results(data, p)
    if not isinstance(data, dict):
        raise CosynthError(f"{p}: a COCO file must be a JSON object with images/annotations/categories")
    _check_structure(data, p)
    taxonomy, cat_to_class = _taxonomy(data["categories"], p)
    by_image: dict[Any, list[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann.get("image_id")].append(ann)
    reasons: Counter = Counter()
    for record in data["images"]:
        h, w = record["height"], record["width"]
        inst = np.zeros(h * w, dtype=np.int64)  # Fortran-flat, as RLE runs are
        classes: list[int] = []
        for ann in by_image.get(record.get("id"), []):
            if ann.get("iscrowd", 0):
                continue
            cat = ann.get("category_id")
            if cat not in cat_to_class:
                raise CosynthError(f"{p}: annotation {ann.get('id')} has category_id {cat!r} not in categories")
            k = len(classes) + 1
            if _paint(inst, ann.get("segmentation"), h, w, k, p, ann.get("id"), reasons):
                classes.append(cat_to_class[cat])
        grid = inst.reshape((h, w), order="F")
        cls_by_id = np.concatenate([[0], classes]).astype(np.int64)
        new, new_classes = relabel_contiguous(grid, cls_by_id)
        yield CocoImageLabels(record=record, instances=new, classes=new_classes, taxonomy=taxonomy)
    report_dropped(p, reasons, what="polygon")


# Ids are JSON integers that survive a round trip through a float64 (JavaScript, pandas).
_MAX_ID = 2**53


def _is_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_ID


def _check_structure(data: dict, path: Path) -> None:
    """The COCO validation layer: the shape of every record before any is used.

    images: objects with a unique integer ``id``, integer ``height``/``width`` in
    [MIN_IMAGE_SIDE, 16384]; annotations: objects with a unique integer ``id``, an ``image_id``
    of a listed image, ``iscrowd`` 0/1; categories: a list (checked by ``_taxonomy``).
    """
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise CosynthError(f"{path}: missing key {key!r} (found: {sorted(data)[:12]})")
        if not isinstance(data[key], list):
            raise CosynthError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")
    image_ids: set[int] = set()
    for i, rec in enumerate(data["images"]):
        if not isinstance(rec, dict):
            raise CosynthError(f"{path}: images[{i}] must be an object, got {type(rec).__name__}")
        if not _is_id(rec.get("id")):
            raise CosynthError(f"{path}: images[{i}] has id {rec.get('id')!r:.40}, not an integer in 0..2^53")
        if rec["id"] in image_ids:
            raise CosynthError(f"{path}: duplicate image id {rec['id']}")
        image_ids.add(rec["id"])
        for side in ("height", "width"):
            v = rec.get(side)
            if not (isinstance(v, int) and not isinstance(v, bool) and MIN_IMAGE_SIDE <= v <= 16384):
                raise CosynthError(
                    f"{path}: image {rec['id']} has {side} {v!r:.40}, not an integer in {MIN_IMAGE_SIDE}..16384")
        name = rec.get("file_name")
        if name is not None and not isinstance(name, str):
            raise CosynthError(f"{path}: image {rec['id']} has file_name {name!r:.40}, not a string")
    ann_ids: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise CosynthError(f"{path}: annotations[{i}] must be an object, got {type(ann).__name__}")
        if not _is_id(ann.get("id")):
            raise CosynthError(f"{path}: annotations[{i}] has id {ann.get('id')!r:.40}, not an integer in 0..2^53")
        if ann["id"] in ann_ids:
            raise CosynthError(f"{path}: duplicate annotation id {ann['id']}")
        ann_ids.add(ann["id"])
        if not _is_id(ann.get("image_id")) or ann["image_id"] not in image_ids:
            raise CosynthError(f"{path}: annotation {ann['id']} has image_id {ann.get('image_id')!r:.40}, not a listed image")
        if not _is_id(ann.get("category_id")):
            raise CosynthError(f"{path}: annotation {ann['id']} has category_id {ann.get('category_id')!r:.40}, not an integer")
        if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd", 0), float):
            raise CosynthError(f"{path}: annotation {ann['id']} has iscrowd {ann.get('iscrowd')!r:.40} (0 or 1)")


def _paint(flat: np.ndarray, seg: Any, h: int, w: int, value: int, path: Path, ann_id: Any, reasons: Counter) -> bool:
    """Paint one annotation's mask with ``value``; polygons with unusable geometry are counted in ``reasons``."""
    if isinstance(seg, dict) and "counts" in seg:
        size = seg.get("size")
        if not isinstance(size, list) or size != [h, w]:
            raise CosynthError(f"{path}: annotation {ann_id} RLE size {size} != image [height, width] [{h}, {w}]")
        try:
            counts = seg["counts"]
            counts = decode_counts_string(counts) if isinstance(counts, (str, bytes)) else [int(c) for c in counts]
        except (IndexError, ValueError, TypeError):
            raise CosynthError(f"{path}: annotation {ann_id} has a malformed (truncated?) RLE 'counts'") from None
        return paint_counts(flat, counts, value) > 0
    if isinstance(seg, list):
        import shapely

        polys = []
        for part in seg:
            if isinstance(part, list) and len(part) >= 6 and len(part) % 2 == 0:
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in part):
                    raise CosynthError(f"{path}: annotation {ann_id} has a polygon with non-numeric coordinates")
                xy = np.asarray(part, dtype=np.float64).reshape(-1, 2)
                problem = ring_problem(xy, bounds_xy=(-1.0, -1.0, w + 1.0, h + 1.0))
                if problem is not None:
                    reasons[problem] += 1
                    continue
                poly = shapely.make_valid(shapely.Polygon(xy))
                polys.append(poly)
        if not polys:
            return False
        geom = shapely.union_all([g for g in polys if g.area > 0]) if any(g.area > 0 for g in polys) else None
        if geom is None:
            return False
        geoms = [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon"]
        mask = rasterize_polygon(shapely.MultiPolygon(geoms), (h, w)) if geoms else np.zeros((h, w), bool)
        flat_mask = mask.ravel(order="F")
        flat[flat_mask] = value
        return bool(flat_mask.any())
    raise CosynthError(f"{path}: annotation {ann_id} has no usable segmentation (RLE dict or polygon list)")


def _from_results(results: list, path: Path) -> dict:
    """A COCO results list (RLE segmentations) as a dataset dict, sizes taken from the RLEs."""
    images: dict[Any, dict] = {}
    cats: set[int] = set()
    for ann in results:
        seg = ann.get("segmentation") if isinstance(ann, dict) else None
        if not (isinstance(seg, dict) and "size" in seg):
            raise CosynthError(f"{path}: a results list needs RLE segmentations with 'size'")
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise CosynthError(f"{path}: RLE 'size' must be [height, width], got {size!r:.40}")
        if not (_is_id(ann.get("image_id")) and _is_id(ann.get("category_id"))):
            raise CosynthError(f"{path}: a result needs integer image_id and category_id, got {ann!r:.60}")
        h, w = size
        images.setdefault(ann["image_id"], {"id": ann["image_id"], "height": h, "width": w, "file_name": None})
        cats.add(int(ann["category_id"]))
    anns = [dict(a, id=i + 1) for i, a in enumerate(results)]
    return {"images": list(images.values()), "annotations": anns,
            "categories": [{"id": c, "name": f"category_{c}"} for c in sorted(cats)]}


def count(path: Path) -> int:
    data = load_json(_json_path(path))
    if isinstance(data, list):
        return len({a.get("image_id") for a in data if isinstance(a, dict)})
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CosynthError(f"{_json_path(path)}: missing key 'images' (a list of image records)")
    return len(data["images"])


def read(path: Path, *, images_dir: str | Path | None = None) -> Iterator[LabelledTile]:
    """Yield one tile per COCO image (image files must exist; see the module docstring)."""
    p = _json_path(path)
    roots = [Path(images_dir)] if images_dir else [p.parent / "images", p.parent]
    for labels in read_coco_labels(p):
        rec = labels.record
        name = rec.get("file_name")
        if not name:
            raise CosynthError(f"{p}: image {rec.get('id')!r} has no file_name")
        image_path = next((r / name for r in roots if (r / name).is_file()), roots[0] / name)
        image = load_image(image_path)
        if image.shape[:2] != labels.instances.shape:
            raise CosynthError(
                f"{image_path}: image shape {image.shape[:2]} != COCO height/width {labels.instances.shape}"
            )
        meta = rec.get("wsi_cosynth") or {}
        where = f"{p}: image {rec['id']}"
        if not isinstance(meta, dict):
            raise CosynthError(f"{where}: 'wsi_cosynth' must be an object")
        prov = meta.get("provenance")
        provenance = provenance_from(prov, where) if prov else Provenance(name=Path(name).stem, source=str(image_path))
        placement = placement_from(meta.get("placement") or None, where)
        yield LabelledTile(
            image=image,
            instances=labels.instances,
            classes=labels.classes,
            taxonomy=labels.taxonomy,
            provenance=provenance,
            placement=placement,
        )
