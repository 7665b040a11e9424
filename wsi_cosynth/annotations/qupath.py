"""QuPath GeoJSON at slide level (docs/FORMATS.md section 4), in level-0 pixels.

Parsing (every container, object-type spelling, classification form, ``nucleusGeometry`` of
cells, childObjects) is :func:`wsi_cosynth.exporters.geojson.read_geojson_nuclei`, shared with
the GeoJSON dataset reader. This module decides what each object IS on a slide:

- detections and cells are nuclei; ``tile``, ``root`` and TMA-core objects are ignored;
- annotations whose geometry is a Point (a MultiPoint arrives as one Point per point) are
  nuclei: CellViT writes one MultiPoint/MultiPolygon annotation per class;
- other annotations are nuclei when the file has no detections or cells (each part of a
  MultiPolygon is one nucleus), otherwise tissue regions named by their class ("Tumor",
  "Stroma"). ``role`` forces polygon annotations to one side.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from shapely.geometry import MultiPolygon

from ..errors import CosynthError, require_file
from .geojson_stream import iter_items
from .table import AnnotationTable, AnnotationWarning, make_table

Role = Literal["auto", "nuclei", "regions"]
_IGNORED = {"tile", "root", "tmacore"}


CHUNK = 2048  # nuclei validated and packed together: bounds the memory of the parse


def read_qupath_geojson(path: str | Path, *, role: Role = "auto") -> AnnotationTable:
    """Nuclei and tissue regions from a QuPath GeoJSON file, streamed.

    Parameters
    ----------
    path : .geojson / .json file (FeatureCollection, array of Features, Feature or Geometry).
    role : what polygon annotations are: "auto" (see module docstring), "nuclei" or "regions".

    Returns
    -------
    AnnotationTable in the file's (level-0) pixel coordinates.

    Notes
    -----
    Features are decoded one at a time (:mod:`.geojson_stream`) and nuclei are validated
    (:func:`~.table.make_table`) and packed every ``CHUNK`` nuclei, so the parse never holds the
    whole file as Python objects. With ``role="auto"`` a first pass looks for a detection or
    cell (it stops at the first one) to decide what polygon annotations are.
    """
    p = require_file(path, "annotations")
    if role not in ("auto", "nuclei", "regions"):
        raise CosynthError(f"annotation role must be auto, nuclei or regions, got {role!r}")
    if role == "auto":
        annotations_are_nuclei = not any(_kind(f) in ("detection", "cell") for f in _stream_features(p))
    else:
        annotations_are_nuclei = role == "nuclei"
    packs: list = []
    read_chunks: list[_ReadChunk] = []  # per chunk: its repairs and count read (repairs.concat_repairs)
    class_chunks: list[np.ndarray] = []
    counts = [0, 0]  # repaired, skipped
    nuclei: list = []
    classes: list[str] = []
    regions: list = []
    region_names: list[str] = []

    def flush() -> None:
        # Validate and pack one chunk (make_table: repairs, drops, the validation layer), then
        # keep only its packed arrays.
        chunk = make_table(nuclei, classes, source=p)
        packs.append(chunk.packed)
        class_chunks.append(chunk.classes)
        read_chunks.append(_ReadChunk(getattr(chunk, "repairs", ()), int(getattr(chunk, "n_read", len(chunk)))))
        counts[0] += chunk.n_repaired
        counts[1] += chunk.n_skipped
        nuclei.clear()
        classes.clear()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnnotationWarning)
        for geom, name, kind in _stream_objects(p):
            if kind in _IGNORED:
                continue
            if kind in ("detection", "cell") or geom.geom_type == "Point":
                nuclei.append(geom)
                classes.append(name)
            elif annotations_are_nuclei:
                parts = list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]
                nuclei.extend(parts)
                classes.extend([name] * len(parts))
            else:
                regions.append(geom)
                region_names.append(name)
            if len(nuclei) >= CHUNK:
                flush()
        if nuclei or not packs:
            flush()
        tissue = make_table([], [], regions=regions, region_names=region_names, source=p) if regions else None
    _rewarn([w for w in caught if issubclass(w.category, AnnotationWarning)], p)
    for w in caught:
        if not issubclass(w.category, AnnotationWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    from .packed import PackedGeometries
    from .repairs import concat_repairs

    table = AnnotationTable(
        classes=np.concatenate(class_chunks),
        regions=None if tissue is None else tissue.regions,
        region_names=None if tissue is None else tissue.region_names,
        source=str(p),
        n_repaired=counts[0] + (tissue.n_repaired if tissue else 0),
        n_skipped=counts[1] + (tissue.n_skipped if tissue else 0),
        packed=PackedGeometries.concat(packs, consume=True),
    )
    table.repairs, table.n_read = concat_repairs(read_chunks)
    return table


class _ReadChunk:
    """What :func:`~.repairs.concat_repairs` needs of a validated chunk, without its geometries."""

    def __init__(self, repairs: tuple, n_read: int) -> None:
        self.repairs, self.n_read = repairs, n_read

    def __len__(self) -> int:
        return self.n_read


def _stream_features(p: Path):
    """Every Feature of the file in file order (childObjects after their parent), streamed."""
    from ..exporters.geojson import _features

    for item, whole in iter_items(p):
        if whole:
            yield from _features(item, p)
            continue
        if not isinstance(item, dict):
            raise CosynthError(f"{p}: feature list holds a {type(item).__name__}, not a Feature object")
        yield item
        for child in (item.get("properties") or {}).get("childObjects") or []:
            yield from _features(child, p)


def _stream_objects(p: Path):
    """(geometry, class name, lower-case object type) of every object, streamed (see read_geojson_nuclei)."""
    from ..exporters.geojson import NucleiTable, _add_feature

    for feat in _stream_features(p):
        one = NucleiTable([], [], [], [])
        try:
            _add_feature(one, feat, p)
        except CosynthError:
            raise
        except Exception as exc:  # shapely / malformed coordinate errors
            raise CosynthError(f"{p}: malformed GeoJSON geometry: {type(exc).__name__}: {exc}") from None
        for geom, name, kind in zip(one.geometries, one.class_names, one.object_types):
            yield geom, name, str(kind).lower()


def _kind(feat: dict) -> str:
    """The object type of a Feature as :func:`~wsi_cosynth.exporters.geojson.read_geojson_nuclei` reads it."""
    from ..exporters.geojson import _LEGACY_IDS

    props = feat.get("properties") or {}
    fid = feat.get("id")
    otype = props.get("objectType") or props.get("object_type") or props.get("type")
    if otype is None and isinstance(fid, str) and fid in _LEGACY_IDS:
        otype = _LEGACY_IDS[fid]
    return str(otype).lower() if otype else "annotation"


def _rewarn(caught: list, p: Path) -> None:
    """One AnnotationWarning for the file, whatever the number of chunks validated."""
    if not caught:
        return
    if len(caught) == 1:
        warnings.warn(str(caught[0].message), AnnotationWarning, stacklevel=3)
        return
    import re

    n_rep = n_skip = 0
    details = []
    for w in caught:
        m = re.search(r"(\d+) invalid polygon\(s\) repaired with make_valid, (\d+) unusable", str(w.message))
        if m:
            n_rep += int(m.group(1))
            n_skip += int(m.group(2))
        d = re.search(r"skipped \((.*)\)$", str(w.message))
        if d:
            details.append(d.group(1))
    warnings.warn(
        f"annotations {p}: {n_rep} invalid polygon(s) repaired with make_valid, "
        f"{n_skip} unusable geometr{'y' if n_skip == 1 else 'ies'} skipped" + (f" ({'; '.join(details)})" if details else ""),
        AnnotationWarning,
        stacklevel=3,
    )
