"""Read and write sets of layouts as JSON or Parquet (chosen by the file suffix).

JSON (``.json``)::

    {"format": "wsi-cosynth-layouts", "version": 1,
     "taxonomy": {"key": ..., "names": [...], "colors": [[r, g, b], ...]},
     "layouts": [{"provenance": {"name", "source", "x_slide", "y_slide", "mpp", "tissue"},
                  "size": [height, width],
                  "placement": {"x0", "y0", "scale"} | null,
                  "xy_tile": [[x, y], ...],          # tile pixels, float
                  "classes": [id, ...]}]}            # ids 1..K of the taxonomy, 0 unclassified

Parquet (``.parquet``): one row per nucleus with columns ``layout`` (name), ``x_tile``,
``y_tile``, ``class_id``, ``class_name``, ``height``, ``width``, ``tissue``, ``source``,
``x_slide``, ``y_slide``, ``mpp``; a layout with no nuclei is one row with null ``x_tile``,
``y_tile``, ``class_id``, ``class_name``. The taxonomy is stored as JSON in the schema metadata
key ``wsi_cosynth_taxonomy``. (Placement is not stored in Parquet: ``x_slide``/``y_slide`` with
scale ``level-0 px per tile px = 1`` is assumed on reading when both are present.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_text_atomic
from ..errors import CosynthError, require_file
from ..records import UNCLASSIFIED, Layout, Provenance, SlidePlacement
from ..taxonomy import Taxonomy

UNCLASSIFIED_NAME = "unclassified"  # class_name of a nucleus of unknown class (class_id 0)

FORMAT = "wsi-cosynth-layouts"
VERSION = 1


def _check_set(layouts: Sequence[Layout]) -> Taxonomy:
    if len(layouts) == 0:
        raise CosynthError("no layouts to write")
    tax = layouts[0].taxonomy
    for lay in layouts:
        if lay.taxonomy.names != tax.names:
            raise CosynthError(f"layout {lay.provenance.name!r}: all layouts in one file must share one taxonomy")
    return tax


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in (".json", ".parquet"):
        raise CosynthError(f"layouts file {path}: expected a .json or .parquet suffix, got {s or 'none'!r}")
    return s


def write_layouts(layouts: Sequence[Layout], path: str | Path) -> None:
    """Write ``layouts`` (one taxonomy) to ``path`` (.json or .parquet), atomically."""
    p = Path(path)
    kind = _suffix(p)
    tax = _check_set(layouts)
    if kind == ".json":
        doc = {"format": FORMAT, "version": VERSION, "taxonomy": tax.to_dict(), "layouts": [
            {"provenance": lay.provenance.to_dict(), "size": list(lay.size),
             "placement": None if lay.placement is None else
             {"x0": lay.placement.x0, "y0": lay.placement.y0, "scale": lay.placement.scale},
             "xy_tile": np.round(lay.xy_tile, 4).tolist(), "classes": lay.classes.tolist()}
            for lay in layouts]}
        write_text_atomic(p, json.dumps(doc))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list] = {k: [] for k in ("layout", "x_tile", "y_tile", "class_id", "class_name", "height",
                                             "width", "tissue", "source", "x_slide", "y_slide", "mpp")}
    for lay in layouts:
        pv = lay.provenance
        n = max(len(lay), 1)
        cols["layout"] += [pv.name] * n
        if len(lay):
            cols["x_tile"] += lay.xy_tile[:, 0].tolist()
            cols["y_tile"] += lay.xy_tile[:, 1].tolist()
            cols["class_id"] += lay.classes.tolist()
            cols["class_name"] += [tax.names[c - 1] if c != UNCLASSIFIED else UNCLASSIFIED_NAME for c in lay.classes]
        else:
            for k in ("x_tile", "y_tile", "class_id", "class_name"):
                cols[k].append(None)
        for k, v in (("height", lay.size[0]), ("width", lay.size[1]), ("tissue", pv.tissue), ("source", pv.source),
                     ("x_slide", pv.x_slide), ("y_slide", pv.y_slide), ("mpp", pv.mpp)):
            cols[k] += [v] * n
    types = {"layout": pa.string(), "x_tile": pa.float64(), "y_tile": pa.float64(), "class_id": pa.int64(),
             "class_name": pa.string(), "height": pa.int64(), "width": pa.int64(), "tissue": pa.string(),
             "source": pa.string(), "x_slide": pa.float64(), "y_slide": pa.float64(), "mpp": pa.float64()}
    table = pa.table({k: pa.array(v, type=types[k]) for k, v in cols.items()})
    table = table.replace_schema_metadata({"wsi_cosynth_taxonomy": json.dumps(tax.to_dict())})
    with atomic_path(p) as tmp:
        pq.write_table(table, tmp)


def read_layouts(path: str | Path) -> list[Layout]:
    """Read a file written by :func:`write_layouts`; CosynthError naming the file on any problem."""
    p = require_file(path, "layouts file")
    kind = _suffix(p)
    if kind == ".json":
        try:
            doc = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CosynthError(f"layouts file {p} is not readable JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CosynthError(f"layouts file {p}: expected format {FORMAT!r}, found {doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}")
        try:
            tax = Taxonomy.from_dict(doc["taxonomy"])
            out = []
            for d in doc["layouts"]:
                pl = d.get("placement")
                out.append(Layout(xy_tile=np.asarray(d["xy_tile"], dtype=np.float64).reshape(-1, 2),
                                  classes=np.asarray(d["classes"], dtype=np.int64), size=tuple(d["size"]),
                                  taxonomy=tax, provenance=Provenance.from_dict(d["provenance"]),
                                  placement=SlidePlacement(**pl) if pl else None))
            return out
        except (KeyError, TypeError, ValueError) as exc:
            raise CosynthError(f"layouts file {p} is malformed: {exc}") from None
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise CosynthError(f"layouts file {p} is not readable Parquet: {exc}") from None
    meta = table.schema.metadata or {}
    if b"wsi_cosynth_taxonomy" not in meta:
        raise CosynthError(f"layouts file {p}: no wsi_cosynth_taxonomy in the Parquet metadata")
    tax = Taxonomy.from_dict(json.loads(meta[b"wsi_cosynth_taxonomy"]))
    d = table.to_pydict()
    missing = {"layout", "x_tile", "y_tile", "class_id", "height", "width"} - set(d)
    if missing:
        raise CosynthError(f"layouts file {p}: missing columns {sorted(missing)}")
    order: dict[str, list[int]] = {}
    for i, name in enumerate(d["layout"]):
        order.setdefault(name, []).append(i)
    out = []
    for name, rows in order.items():
        r0 = rows[0]
        pts = [i for i in rows if d["x_tile"][i] is not None]
        xs, ys = d.get("x_slide", [None] * len(d["layout"]))[r0], d.get("y_slide", [None] * len(d["layout"]))[r0]
        prov = Provenance(name=name, source=d.get("source", [None])[r0] if "source" in d else None,
                          x_slide=xs, y_slide=ys, mpp=d["mpp"][r0] if "mpp" in d else None,
                          tissue=d["tissue"][r0] if "tissue" in d else None)
        out.append(Layout(xy_tile=np.array([[d["x_tile"][i], d["y_tile"][i]] for i in pts]).reshape(-1, 2),
                          classes=np.array([d["class_id"][i] for i in pts], dtype=np.int64),
                          size=(d["height"][r0], d["width"][r0]), taxonomy=tax, provenance=prov,
                          placement=SlidePlacement(xs, ys, 1.0) if xs is not None and ys is not None else None))
    return out
