"""GeoParquet nuclei or tissue tables (e.g. histolytics' whole-slide tables), level-0 pixels.

The geometry column is the ``geo`` metadata's ``primary_column`` (default "geometry"), WKB
encoded; the class column is the first of ``class_name``, ``class``, ``classification``,
``type`` that exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely

from ..errors import CosynthError, require_file
from .table import UNCLASSIFIED, AnnotationTable, make_table

CLASS_COLUMNS = ("class_name", "class", "classification", "type")


def read_geoparquet(path: str | Path, *, role: str = "nuclei") -> AnnotationTable:
    """Nuclei (``role="nuclei"``) or tissue regions (``role="regions"``) from a GeoParquet file."""
    import pyarrow.parquet as pq

    p = require_file(path, "annotations")
    try:
        pf = pq.ParquetFile(p)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError for non-parquet
        raise CosynthError(f"annotations {p} are not a readable Parquet file ({exc})") from None
    meta = pf.schema_arrow.metadata or {}
    geo_col = "geometry"
    if b"geo" in meta:
        try:
            geo_col = json.loads(meta[b"geo"]).get("primary_column", geo_col)
        except json.JSONDecodeError:
            pass
    names = pf.schema_arrow.names
    if geo_col not in names:
        raise CosynthError(f"annotations {p}: no geometry column {geo_col!r} (columns: {', '.join(names)})")
    cls_col = next((c for c in CLASS_COLUMNS if c in names), None)
    try:
        table = pf.read(columns=[geo_col] + ([cls_col] if cls_col else []))
    except Exception as exc:  # noqa: BLE001 - pyarrow reports damaged pages as OSError/ArrowInvalid
        raise CosynthError(f"annotations {p}: damaged Parquet data ({' '.join(str(exc).split())})") from None
    try:
        geoms = shapely.from_wkb(np.asarray(table.column(geo_col).to_numpy(zero_copy_only=False), dtype=object))
    except Exception as exc:  # noqa: BLE001
        raise CosynthError(f"annotations {p}: geometry column {geo_col!r} is not WKB ({exc})") from None
    classes = (
        [str(c) if c is not None else UNCLASSIFIED for c in table.column(cls_col).to_pylist()]
        if cls_col else [UNCLASSIFIED] * len(geoms)
    )
    if role == "regions":
        return make_table([], [], regions=list(geoms), region_names=classes, source=p)
    if role != "nuclei":
        raise CosynthError(f"GeoParquet role must be 'nuclei' or 'regions', got {role!r}")
    return make_table(geoms, classes, source=p)
