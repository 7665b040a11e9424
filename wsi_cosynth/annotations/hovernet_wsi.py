"""HoVer-Net WSI-mode JSON (docs/FORMATS.md 5.1): ``{"mag": proc_mag, "nuc": {id: {contour, type, ...}}}``.

WSI mode stores coordinates at the processing magnification; level-0 pixels are obtained by
multiplying by ``base_mag / proc_mag`` (base_mag: the slide's objective power). Tile mode
(``mag`` null) is read unscaled. ``type`` ids become names through ``type_names`` (HoVer-Net's
tables for its CoNSeP, PanNuke and MoNuSAC checkpoints are built in); 0 means "no label".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from shapely.geometry import Point, Polygon

from ..errors import CosynthError, require_file
from ..validation import report_dropped, ring_problem
from .table import AnnotationTable, make_table

TYPE_TABLES: dict[str, dict[int, str]] = {
    "consep": {1: "epithelial", 2: "inflammatory", 3: "spindle", 4: "other"},
    "pannuke": {1: "neoplastic", 2: "inflammatory", 3: "connective", 4: "dead", 5: "epithelial"},
    "monusac": {1: "epithelial", 2: "lymphocyte", 3: "macrophage", 4: "neutrophil"},
}
NO_LABEL = "unlabelled"


def is_hovernet_json(data: object) -> bool:
    """True for HoVer-Net's ``{"mag", "nuc"}`` output."""
    return isinstance(data, dict) and isinstance(data.get("nuc"), dict)


def _type_lookup(type_names: str | Mapping[int, str] | Sequence[str] | None) -> dict[int, str] | None:
    if type_names is None:
        return None
    if isinstance(type_names, str):
        if type_names.lower() not in TYPE_TABLES:
            raise CosynthError(f"unknown HoVer-Net type table {type_names!r} (valid: {', '.join(TYPE_TABLES)})")
        return TYPE_TABLES[type_names.lower()]
    if isinstance(type_names, Mapping):
        return {int(k): str(v) for k, v in type_names.items()}
    return {i + 1: str(n) for i, n in enumerate(type_names)}


def read_hovernet_wsi(
    path: str | Path, *, base_mag: float | None = None,
    type_names: str | Mapping[int, str] | Sequence[str] | None = None, data: dict | None = None,
) -> AnnotationTable:
    """Nuclei from a HoVer-Net JSON file, scaled to level-0 pixels.

    Parameters
    ----------
    base_mag : the slide's objective magnification (e.g. 40); required when the file records a
        processing magnification ``mag``.
    type_names : "consep" | "pannuke" | "monusac", a {type_id: name} map or names for ids 1..K;
        None names types "type_<k>".
    """
    from ..exporters._common import load_json

    p = require_file(path, "annotations")
    data = load_json(p) if data is None else data
    if not is_hovernet_json(data):
        raise CosynthError(f"annotations {p}: not HoVer-Net JSON (no 'nuc' object)")
    proc_mag = data.get("mag")
    scale = 1.0
    if proc_mag is not None:
        if base_mag is None:
            raise CosynthError(
                f"annotations {p} were made at {proc_mag}x (HoVer-Net WSI mode): the slide's base "
                f"magnification is needed to scale them to level 0 (slide property openslide.objective-power)"
            )
        try:
            scale = float(base_mag) / float(proc_mag)
        except (TypeError, ValueError, ZeroDivisionError):
            raise CosynthError(f"annotations {p}: 'mag' must be a positive magnification, got {proc_mag!r}") from None
        if not scale > 0:
            raise CosynthError(f"annotations {p}: 'mag' must be a positive magnification, got {proc_mag!r}")
    lookup = _type_lookup(type_names)
    dropped: Counter = Counter()
    nuclei: list = []
    classes: list[str] = []
    for key, nuc in data["nuc"].items():
        if not isinstance(nuc, dict):
            raise CosynthError(f"annotations {p}: nucleus {key!r} is not an object")
        t = nuc.get("type")
        if t is not None:
            if isinstance(t, bool) or not (isinstance(t, int) or (isinstance(t, float) and t.is_integer())) \
                    or not 0 <= t <= 1_000_000:
                raise CosynthError(f"annotations {p}: nucleus {key} has type {t!r:.40}, not a class id (integer >= 0)")
            t = int(t)
        if t is None:
            name = "nucleus"
        elif t == 0:
            name = NO_LABEL
        elif lookup is None:
            name = f"type_{t}"
        else:
            if t not in lookup:
                raise CosynthError(f"annotations {p}: nucleus {key} has type {t}, not in the type table {lookup}")
            name = lookup[t]
        try:
            contour = np.asarray(nuc["contour"], dtype=np.float64).reshape(-1, 2) if nuc.get("contour") else None
            centroid = np.asarray(nuc["centroid"], dtype=np.float64).reshape(2) if nuc.get("centroid") is not None else None
        except (TypeError, ValueError):
            raise CosynthError(f"annotations {p}: nucleus {key} has a malformed contour or centroid") from None
        # Both are the nucleus's geometry: either one damaged drops it (counted; strict: an error).
        parts = [a for a in (contour, None if centroid is None else centroid[None]) if a is not None]
        problem = next((q for q in (ring_problem(a, min_points=1) for a in parts) if q is not None), None)
        if problem is not None:
            dropped[problem] += 1
            continue
        # HoVer-Net coordinates are pixel INDICES (pixel centres; the contour runs through the
        # centres of the boundary pixels, which cv2 fills too). In level-0 corner coordinates a
        # pixel index i is the square [i, i + 1]: shift by half a pixel, and grow the contour by
        # half a pixel so the boundary pixels are inside, as in the tile reader.
        if contour is not None and len(contour) >= 3:
            polygon = Polygon((contour + 0.5) * scale)
            nuclei.append(polygon.buffer(0.5 * scale, join_style="mitre") if polygon.is_valid else polygon)
        elif centroid is not None:
            nuclei.append(Point((centroid + 0.5) * scale))
        else:
            nuclei.append(None)
        classes.append(name)
    report_dropped(f"annotations {p}", dropped)
    return make_table(nuclei, classes, source=p)
