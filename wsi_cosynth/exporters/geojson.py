"""QuPath-compatible GeoJSON (docs/FORMATS.md section 4): writer and reader.

Layout written::

    out/images/<name>.png       RGB tiles
    out/tiles/<name>.geojson    one FeatureCollection per tile
    out/<slide>.geojson         for tiles with a slide placement: all their nuclei in one
                                FeatureCollection per source slide (import this into QuPath)
    out/index.json              {"taxonomy", "tiles": [{name, image, geojson, size, frame,
                                provenance, placement}]}: what ``read`` needs to rebuild tiles

Each nucleus is a Feature with a UUID ``id`` (uuid5 of tile name and instance id, so reruns give
the same bytes), one valid Polygon traced on the pixel-corner grid with closed rings rounded to 2
decimals (a nucleus in several parts keeps its largest part, as TIAToolbox's stores accept only
Polygon; the writer counts the dropped fragments in ``notes``; ``multipolygon=True`` writes a
MultiPolygon instead), ``properties.objectType`` "detection",
``classification`` {name, color [r, g, b]} and ``measurements`` {"Area px^2": float} (no NaN).
Coordinates are level-0 slide pixels (``placement``: x0 + x * scale) when the tile has a
placement ("frame": "slide"), else tile pixels ("frame": "tile"). Real tiles exported from
annotated slides carry their source outlines (``tile.extra["outlines_tile"]``): those are
written, clipped to the tile, instead of a trace of the rasterised mask (the tile's mask and
image are unchanged; "Area px^2" is then the clipped outline's area in tile pixels).

Reading (:func:`read_geojson_nuclei`) accepts every form in docs/FORMATS.md 4: FeatureCollection,
array of Features, single Feature, bare Geometry; objectType / object_type / type / legacy v0.2
ids; ``nucleusGeometry`` of cells (used as the nucleus); classification as a string,
{name|names, color}, legacy {name, colorRGB} or {parentClass, ...}; childObjects; bare or string
NaN measurements; Polygon, MultiPolygon, Point, MultiPoint (one entry per point), LineStrings
(kept as geometries, never rasterised). ``read`` turns a dataset written here, or a folder of
images/<stem>.png + <stem>.geojson pairs in tile pixels, into tiles. Point features carry no
outline, so they cannot become instance masks: ``read`` raises CosynthError for them; use
:func:`read_geojson_nuclei` (``xy`` gives the points) to build layouts instead. Unclassified
nuclei get the class name "unclassified".
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CosynthError, optional_file, require_dir
from ..geometry import instance_bboxes, mask_to_polygons, rasterize_polygon
from ..records import LabelledTile, Provenance, relabel_contiguous
from ..taxonomy import Taxonomy
from ..validation import geometry_problems, placement_from, provenance_from, report_dropped
from ._common import LABELS_BY_KEY, BackgroundJobs, DatasetWriter, IMAGE_SUFFIXES, list_stems, load_image, load_json

UNCLASSIFIED = "unclassified"
OUTLINES_KEY = "outlines_tile"  # LabelledTile.extra: source outlines (pipeline.planning.OUTLINES_KEY)
_COLLECTION_HEAD, _COLLECTION_TAIL = '{"type":"FeatureCollection","features":[', "]}"
_NAMESPACE = uuid.UUID("6f1c6c52-3b7e-4a0e-9a53-5b3f1f0c9d11")
_NAMESPACE_BYTES = _NAMESPACE.bytes
_COMPACT_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_LEGACY_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
    "TMACoreObject": "tmaCore",
    "PathRootObject": "root",
}


# ----------------------------------------------------------------------------------------- writing
class Writer(DatasetWriter):
    fmt = "geojson"
    ENCODE_BACKLOG = 8

    def __init__(self, out_dir: Path, taxonomy: Taxonomy, *, multipolygon: bool = False, **kw: Any) -> None:
        super().__init__(out_dir, taxonomy, **kw)
        (self.root / "images").mkdir()
        (self.root / "tiles").mkdir()
        self.entries: list[dict] = []
        self.multipolygon = bool(multipolygon)
        self.fragments = FragmentCount()
        self._encoding = BackgroundJobs("geojson-encode", threads=1, backlog=self.ENCODE_BACKLOG)

    def _add(self, tile: LabelledTile) -> None:
        name = tile.provenance.name
        self._save_image(self.root / "images" / f"{name}.png", tile.image)
        # Features are built and written in one background thread (FIFO, so the fragment count
        # and every byte are as if inline), at most ENCODE_BACKLOG tiles behind.
        self._encoding.submit(self._write_features, tile, self.root / "tiles" / f"{name}.geojson")
        pl = tile.placement
        self.entries.append(
            {
                "name": name,
                "image": f"images/{name}.png",
                "geojson": f"tiles/{name}.geojson",
                "size": list(tile.size),
                "frame": "slide" if pl is not None else "tile",
                "provenance": tile.provenance.to_dict(),
                "placement": None if pl is None else {"x0": pl.x0, "y0": pl.y0, "scale": pl.scale},
            }
        )

    def _write_features(self, tile: LabelledTile, path: Path) -> None:
        path.write_text(tile_collection_json(tile, multipolygon=self.multipolygon, fragments=self.fragments))

    def _wait_for_encoding(self, *, raise_errors: bool = True) -> None:
        self._encoding.drain(raise_errors=raise_errors)

    def _release(self) -> None:
        self._wait_for_encoding(raise_errors=False)

    def _finish(self) -> None:
        self._wait_for_encoding()
        by_slide: dict[str, list[str]] = {}
        for e in self.entries:
            if e["frame"] == "slide":
                stem = Path(e["provenance"].get("source") or "slide").stem or "slide"
                by_slide.setdefault(stem, []).append(e["geojson"])
        for stem, files in by_slide.items():
            # Stream the per-tile features into one collection: no slide-sized list in memory.
            with open(self.root / f"{stem}.geojson", "w") as out:
                out.write('{"type":"FeatureCollection","features":[')
                first = True
                for rel in files:
                    # The tile files were written just above as one compact FeatureCollection:
                    # splice their feature text (the bytes a json round trip would give).
                    text = (self.root / rel).read_text()
                    inner = text[len(_COLLECTION_HEAD):-len(_COLLECTION_TAIL)]
                    if not (text.startswith(_COLLECTION_HEAD) and text.endswith(_COLLECTION_TAIL)):
                        inner = ",".join(json.dumps(f, separators=(",", ":")) for f in json.loads(text)["features"])
                    if inner:
                        out.write(("" if first else ",") + inner)
                        first = False
                out.write("]}")
        index = {"taxonomy": self.taxonomy.to_dict(),
                 **({LABELS_BY_KEY: self.labels_by} if self.labels_by is not None else {}), "tiles": self.entries}
        (self.root / "index.json").write_text(json.dumps(index, indent=1))
        if self.fragments.nuclei:
            self.notes.append(self.fragments.describe())


@dataclass
class FragmentCount:
    """Nuclei written as their largest polygon, and the smaller parts (fragments) left out."""

    nuclei: int = 0
    fragments: int = 0
    area_px: float = 0.0

    def describe(self) -> str:
        return (f"geojson: {self.nuclei} nuclei in several parts were written as their largest polygon, dropping "
                f"{self.fragments} fragment(s) of {self.area_px:.0f} px^2 in all (multipolygon=True / "
                f"--geojson-multipolygon keeps them as MultiPolygon)")


def nucleus_geometry(parts: list, offset: tuple[float, float], scale: float, *, multipolygon: bool = False,
                     fragments: FragmentCount | None = None) -> tuple[dict, float]:
    """GeoJSON geometry of one nucleus from its polygons (largest first) and the area it covers.

    One Polygon by default: the largest part, the others counted in ``fragments`` (tile-pixel
    area); with ``multipolygon`` a nucleus in several parts is a MultiPolygon of all of them.
    """
    def rings(p) -> list[list[list[float]]]:
        return _valid_rings([_ring(p.exterior.coords, offset, scale)] + [_ring(h.coords, offset, scale) for h in p.interiors])

    if len(parts) == 1 or not multipolygon:
        if len(parts) > 1 and fragments is not None:
            fragments.nuclei += 1
            fragments.fragments += len(parts) - 1
            fragments.area_px += float(sum(p.area for p in parts[1:]))
        return {"type": "Polygon", "coordinates": rings(parts[0])}, float(parts[0].area)
    return {"type": "MultiPolygon", "coordinates": [rings(p) for p in parts]}, float(sum(p.area for p in parts))


def _valid_rings(rings: list[list[list[float]]]) -> list[list[list[float]]]:
    """``rings`` (shell, holes; output coordinates rounded to 2 decimals) as a valid polygon.

    Scaling and rounding can make a valid outline touch itself (a "ring self-intersection",
    which TIAToolbox and GEOS reject); such a polygon is snapped to the 0.01 grid with
    ``shapely.set_precision`` (valid by construction) and its largest part kept.
    """
    import shapely

    shape = shapely.Polygon(rings[0], rings[1:])
    if shape.is_valid:
        return rings
    fixed = _polygon_parts(shapely.set_precision(shape, 0.01))
    if not fixed:  # collapsed on the grid: the outline's bounding box
        x0, y0, x1, y1 = shape.bounds
        fixed = [shapely.box(x0, y0, max(x1, x0 + 0.01), max(y1, y0 + 0.01))]
    best = fixed[0]
    return [_round2(np.asarray(best.exterior.coords)).tolist()] + [_round2(np.asarray(h.coords)).tolist()
                                                                  for h in best.interiors]


def tile_features(tile: LabelledTile, *, multipolygon: bool = False, fragments: FragmentCount | None = None) -> list[dict]:
    """QuPath detection Features of a tile's nuclei (slide frame if the tile has a placement).

    Each nucleus is one Polygon unless ``multipolygon`` (see :func:`nucleus_geometry`).
    """
    return [_feature(tile, k, geometry, area, cls)
            for k, geometry, area, cls in _nucleus_geometries(tile, multipolygon=multipolygon, fragments=fragments)]


def tile_collection_json(tile: LabelledTile, *, multipolygon: bool = False, fragments: FragmentCount | None = None) -> str:
    """The tile's FeatureCollection as compact JSON: the bytes ``json.dumps({"type":
    "FeatureCollection", "features": tile_features(tile)}, separators=(",", ":"))`` gives, built
    from per-feature pieces (the class properties encoded once per class, not per nucleus)."""
    encode = _COMPACT_ENCODER.encode
    classes: dict[int, str] = {}
    parts = []
    for k, geometry, area, cls in _nucleus_geometries(tile, multipolygon=multipolygon, fragments=fragments):
        head = classes.get(cls)
        if head is None:
            head = classes[cls] = encode(_classification(tile, cls))
        # Key order and separators as _feature's dict encodes; ids are hex and dashes (no escaping).
        parts.append(f'{{"type":"Feature","id":"{_uuid5(f"{tile.provenance.name}/{k + 1}")}","geometry":'
                     f'{encode(geometry)},"properties":{{"objectType":"detection","classification":{head},'
                     f'"measurements":{{"Area px^2":{encode(area)}}}}}}}')
    return _COLLECTION_HEAD + ",".join(parts) + _COLLECTION_TAIL


def _nucleus_geometries(tile: LabelledTile, *, multipolygon: bool, fragments: FragmentCount | None):
    """(k, GeoJSON geometry, area, class) of each nucleus k of the tile, in order."""
    pl = tile.placement
    offset, scale = ((pl.x0, pl.y0), pl.scale) if pl is not None else ((0.0, 0.0), 1.0)
    outlines = tile.extra.get(OUTLINES_KEY)
    if outlines is not None and len(outlines) != tile.n_nuclei:
        outlines = None
    boxes = None
    simple = _simple_outline_geometries(outlines, offset, scale) if outlines is not None else {}
    for k in range(tile.n_nuclei):
        cls = int(tile.classes[k])
        if k in simple:
            geometry, area = simple[k]
            yield k, geometry, area, cls
            continue
        # A real tile carries the source outlines its mask was drawn from: write those (clipped to
        # the tile); synthetic tiles, or an outline with no area left, are traced from the mask.
        parts = _polygon_parts(outlines[k]) if outlines is not None else []
        if not parts:
            if boxes is None:
                boxes = instance_bboxes(tile.instances, tile.n_nuclei)
            r0, r1, c0, c1 = (int(v) for v in boxes[k])
            parts = mask_to_polygons(tile.instances[r0:r1, c0:c1] == k + 1, offset_xy=(c0, r0))
        geometry, area = nucleus_geometry(parts, offset, scale, multipolygon=multipolygon, fragments=fragments)
        yield k, geometry, area, cls


def _classification(tile: LabelledTile, cls: int) -> dict:
    return {"name": tile.taxonomy.name_of(cls), "color": list(tile.taxonomy.color_of(cls))}


def _feature(tile: LabelledTile, k: int, geometry: dict, area: float, cls: int) -> dict:
    return {
        "type": "Feature",
        "id": _uuid5(f"{tile.provenance.name}/{k + 1}"),
        "geometry": geometry,
        "properties": {
            "objectType": "detection",
            "classification": _classification(tile, cls),
            "measurements": {"Area px^2": area},
        },
    }


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_NAMESPACE, name))`` without building a UUID object (RFC 4122 section 4.3:
    SHA-1 of namespace + name, version 5 and the RFC variant set in bytes 6 and 8)."""
    d = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8")).digest()[:16])
    d[6] = (d[6] & 0x0F) | 0x50
    d[8] = (d[8] & 0x3F) | 0x80
    h = d.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _simple_outline_geometries(outlines: np.ndarray, offset: tuple[float, float], scale: float) -> dict[int, tuple[dict, float]]:
    """{k: (GeoJSON Polygon, area)} for the outlines that are one hole-free polygon, vectorised.

    The same result :func:`nucleus_geometry` gives them one by one (rounded rings, valid after
    rounding); outlines in several parts, with holes, empty, or invalid once rounded are left out
    for that per-nucleus path.
    """
    import shapely

    arr = np.asarray(outlines, dtype=object)
    if not len(arr) or any(g is None for g in arr):
        return {}
    areas = shapely.area(arr)
    ok = (shapely.get_type_id(arr) == 3) & (shapely.get_num_interior_rings(arr) == 0) & (areas > 0)
    ok &= ~shapely.is_empty(arr)
    which = np.flatnonzero(ok)
    if not len(which):
        return {}
    coords, index = shapely.get_coordinates(arr[which], return_index=True)
    rounded = _round2(coords * scale + np.asarray(offset, dtype=np.float64))
    # Valid after rounding (as _valid_rings checks): rebuilt from the rounded rings in one call.
    valid = shapely.is_valid(shapely.polygons(shapely.linearrings(rounded, indices=index)))
    cuts = np.flatnonzero(np.diff(index)) + 1
    points = rounded.tolist()  # one conversion for the tile, sliced per ring
    bounds = [0, *cuts.tolist(), len(points)]
    out: dict[int, tuple[dict, float]] = {}
    for j in np.flatnonzero(valid).tolist():
        k = int(which[j])
        out[k] = ({"type": "Polygon", "coordinates": [points[bounds[j]:bounds[j + 1]]]}, float(areas[k]))
    return out


def _polygon_parts(geom: Any) -> list:
    """Polygons of a (clipped) outline with positive area, largest first."""
    if geom is None or geom.is_empty:
        return []
    parts = list(geom.geoms) if hasattr(geom, "geoms") else [geom]
    polys = [p for p in parts if p.geom_type == "Polygon" and p.area > 0]
    for p in parts:
        if p.geom_type == "MultiPolygon":
            polys.extend(q for q in p.geoms if q.area > 0)
    return sorted(polys, key=lambda p: -p.area)


def _ring(coords: Any, offset: tuple[float, float], scale: float) -> list[list[float]]:
    xy = np.asarray(coords, dtype=np.float64) * scale + np.asarray(offset)
    return _round2(xy).tolist()


def _round2(values: np.ndarray) -> np.ndarray:
    """``round(v, 2)`` of every value, as Python computes it (correctly rounded), vectorised.

    ``rint(v * 100) / 100`` gives the same double except where ``v * 100`` lies within rounding
    error of a half; those few values are rounded by Python itself.
    """
    scaled = values * 100.0
    out = np.rint(scaled) / 100.0
    near_half = np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) <= np.maximum(1e-6, 4 * np.spacing(np.abs(scaled)))
    for i in zip(*np.nonzero(near_half)):
        out[i] = round(float(values[i]), 2)
    return out


# ----------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class NucleiTable:
    """Objects of one GeoJSON file, in file order (coordinates as in the file, e.g. level-0 px).

    geometries : shapely geometries (a cell's nucleusGeometry when present; one Point per point
        of a MultiPoint); class_names : QuPath class name or "unclassified" (derived classes
        joined with ': '); object_types : "detection", "cell", "annotation", ...; ids : the
        Feature ids (None when absent).
    """

    geometries: list
    class_names: list[str]
    object_types: list[str]
    ids: list[str | None]

    def __len__(self) -> int:
        return len(self.geometries)

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) float64 (x, y) centroid of every object."""
        import shapely

        if not self.geometries:
            return np.zeros((0, 2))
        return shapely.get_coordinates(shapely.centroid(np.asarray(self.geometries, dtype=object)))

    @property
    def is_point(self) -> np.ndarray:
        return np.array([g.geom_type == "Point" for g in self.geometries], dtype=bool)


def classification_name(obj: Any) -> str:
    """QuPath PathClass JSON (any version) -> class name ("A: B" for derived classes)."""
    if obj is None:
        return UNCLASSIFIED
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        if "names" in obj and isinstance(obj["names"], list):
            return ": ".join(str(n) for n in obj["names"])
        name = obj.get("name")
        parent = obj.get("parentClass")
        if parent is not None:
            return f"{classification_name(parent)}: {name}" if name is not None else classification_name(parent)
        if name is not None:
            return str(name)
    raise CosynthError(f"classification {obj!r} is not a QuPath class (string, {{name|names, color}}, legacy form)")


def read_geojson_nuclei(path: str | Path) -> NucleiTable:
    """All objects of a QuPath-style GeoJSON file as a :class:`NucleiTable` (see module docstring)."""
    p = Path(path)
    data = load_json(p)
    table = NucleiTable([], [], [], [])
    try:
        for feat in _features(data, p):
            _add_feature(table, feat, p)
    except CosynthError:
        raise
    except Exception as exc:  # shapely / malformed coordinate errors
        raise CosynthError(f"{p}: malformed GeoJSON geometry: {type(exc).__name__}: {exc}") from None
    return table


def _features(data: Any, path: Path) -> Iterator[dict]:
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = data.get("features") or []
    elif isinstance(data, dict) and data.get("type") == "Feature":
        items = [data]
    elif isinstance(data, dict) and "coordinates" in data or (isinstance(data, dict) and "geometries" in data):
        items = [{"type": "Feature", "geometry": data, "properties": {"objectType": "annotation"}}]
    else:
        raise CosynthError(f"{path}: not GeoJSON (expected a FeatureCollection, Feature, array or Geometry)")
    for item in items:
        if not isinstance(item, dict):
            raise CosynthError(f"{path}: feature list holds a {type(item).__name__}, not a Feature object")
        yield item
        for child in (item.get("properties") or {}).get("childObjects") or []:
            yield from _features(child, path)


def _add_feature(table: NucleiTable, feat: dict, path: Path) -> None:
    import shapely.geometry

    props = feat.get("properties") or {}
    fid = feat.get("id")
    otype = props.get("objectType") or props.get("object_type") or props.get("type")
    if otype is None and isinstance(fid, str) and fid in _LEGACY_IDS:
        otype = _LEGACY_IDS[fid]
    otype = str(otype) if otype else "annotation"
    geom_json = feat.get("nucleusGeometry") if otype == "cell" and feat.get("nucleusGeometry") else feat.get("geometry")
    if geom_json is None:
        return
    name = classification_name(props.get("classification"))
    geom = shapely.geometry.shape(geom_json)
    parts = list(geom.geoms) if geom.geom_type == "MultiPoint" else [geom]
    for g in parts:
        table.geometries.append(g)
        table.class_names.append(name)
        table.object_types.append(otype)
        table.ids.append(fid if isinstance(fid, str) else None)


def _entries(path: Path) -> tuple[list[dict], Taxonomy | None]:
    require_dir(path, "GeoJSON dataset")
    index_path = path / "index.json"
    if optional_file(index_path, "GeoJSON dataset index"):
        index = load_json(index_path)
        if not isinstance(index, dict) or not isinstance(index.get("tiles"), list) or "taxonomy" not in index:
            raise CosynthError(f"{index_path}: expected an object with 'tiles' (a list) and 'taxonomy'")
        for i, entry in enumerate(index["tiles"]):
            _check_entry(entry, f"{index_path}: tiles[{i}]")
        return index["tiles"], Taxonomy.from_dict(index["taxonomy"], where=str(index_path))
    images = list_stems(path / "images" if (path / "images").is_dir() else path, IMAGE_SUFFIXES)
    feats = {**list_stems(path, (".geojson", ".json")), **list_stems(path / "tiles", (".geojson", ".json"))}
    entries = []
    for stem, img in images.items():
        if stem not in feats:
            raise CosynthError(f"{path}: no {stem}.geojson for image {img.name}")
        entries.append({"name": stem, "image": str(img), "geojson": str(feats[stem]), "frame": "tile"})
    if not entries:
        raise CosynthError(f"{path}: no index.json and no image + .geojson pairs")
    return entries, None


def _check_entry(entry: Any, where: str) -> None:
    """One index.json tile record: names and relative paths as strings, size and placement sane."""
    if not isinstance(entry, dict):
        raise CosynthError(f"{where}: must be an object, got {type(entry).__name__}")
    for key in ("name", "image", "geojson"):
        v = entry.get(key)
        if not isinstance(v, str) or not v:
            raise CosynthError(f"{where}: {key!r} must be a non-empty string, got {str(v)[:40]!r}")
    size = entry.get("size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise CosynthError(f"{where}: 'size' must be [height, width] positive integers, got {str(size)[:40]}")
    placement_from(entry.get("placement"), where)
    if entry.get("provenance") is not None:
        provenance_from(entry["provenance"], where)


def count(path: Path) -> int:
    return len(_entries(path)[0])


def read(path: Path) -> Iterator[LabelledTile]:
    """Yield tiles of a GeoJSON dataset (see the module docstring), nuclei in file order."""
    entries, taxonomy = _entries(path)
    tables = [(e, read_geojson_nuclei(path / e["geojson"])) for e in entries]
    if taxonomy is None:  # a foreign folder: the class set is the sorted names found
        names = sorted({n for _, t in tables for n in t.class_names})
        try:
            taxonomy = Taxonomy.from_names(path.name or "geojson", names or [UNCLASSIFIED])
        except CosynthError as exc:  # an empty or case-duplicated class name in the features
            raise CosynthError(f"{path}: the GeoJSON classifications do not form a class set: {exc}") from None
    for entry, table in tables:
        gj = path / entry["geojson"]
        if table.is_point.any():
            raise CosynthError(
                f"{gj}: {int(table.is_point.sum())} point feature(s) carry no nucleus outline and cannot "
                "become instance masks; read them as points with read_geojson_nuclei"
            )
        image = load_image(path / entry["image"])
        h, w = image.shape[:2]
        if entry.get("size") is not None and list(entry["size"]) != [h, w]:
            raise CosynthError(f"{path / entry['image']}: image is {h} x {w} px but index.json records {entry['size']}")
        placement = placement_from(entry.get("placement"), str(path / "index.json"))
        offset, scale = ((placement.x0, placement.y0), placement.scale) if placement else ((0.0, 0.0), 1.0)
        # Vertices on the pixel-corner grid lie in [0, W] x [0, H] of the tile (one pixel of slack).
        bounds = (offset[0] - scale, offset[1] - scale, offset[0] + (w + 1) * scale, offset[1] + (h + 1) * scale)
        problems = geometry_problems(table.geometries, bounds_xy=bounds)
        report_dropped(gj, Counter(p for p in problems if p is not None))
        inst = np.zeros((h, w), dtype=np.int64)
        cls_by_id = [0]
        for geom, name, problem in zip(table.geometries, table.class_names, problems):
            if geom.geom_type not in ("Polygon", "MultiPolygon") or problem is not None:
                continue
            mask = rasterize_polygon(geom, (h, w), offset_xy=offset, scale=scale)
            if mask.any():
                inst[mask] = len(cls_by_id)
                cls_by_id.append(taxonomy.id_of(name, where=str(gj)))
        new, classes = relabel_contiguous(inst, np.asarray(cls_by_id))
        prov = entry.get("provenance")
        yield LabelledTile(
            image=image,
            instances=new,
            classes=classes,
            taxonomy=taxonomy,
            provenance=provenance_from(prov, str(path / "index.json")) if prov else Provenance(name=entry["name"], source=str(gj)),
            placement=placement,
        )
