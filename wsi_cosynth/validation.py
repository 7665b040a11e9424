"""Input checks shared by the readers: geometry, JSON structure, and the bad-geometry policy.

Geometry: an object can outline (or mark) a nucleus only if every vertex is finite, lies within
+-2^31 pixels (no slide is larger; 1e300 is damage, not data), inside the image when the frame
is known, and a polygon has at least 3 distinct points (zero-area and self-intersecting polygons are
left to :func:`wsi_cosynth.annotations.table.clean_geometries`, which repairs or skips them). Readers drop other
objects and report the count per reason with one :class:`GeometryWarning` per file; under
:func:`strict_geometry` (the CLI's ``--strict-geometry``) a dropped object is an error instead.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CosynthError

MAX_COORDINATE = float(2**31)
_STRICT: ContextVar[bool] = ContextVar("wsi_cosynth_strict_geometry", default=False)

NON_FINITE = "non-finite coordinate"
TOO_LARGE = "coordinate beyond +-2^31 px"
OUTSIDE = "outside the image"
DEGENERATE = "fewer than 3 distinct points"


class GeometryWarning(UserWarning):
    """Objects with unusable geometry were dropped while reading (counts per reason in the message)."""


@contextlib.contextmanager
def strict_geometry(enabled: bool = True) -> Iterator[None]:
    """Within the block, readers raise :class:`CosynthError` instead of dropping bad geometry."""
    token = _STRICT.set(bool(enabled))
    try:
        yield
    finally:
        _STRICT.reset(token)


def is_strict() -> bool:
    """True inside :func:`strict_geometry`."""
    return _STRICT.get()


def ring_problem(
    xy: Any, *, bounds_xy: tuple[float, float, float, float] | None = None, min_points: int = 3,
) -> str | None:
    """Why a vertex list cannot outline a nucleus, or None when it can.

    Parameters
    ----------
    xy : (N, 2) array-like of (x, y) vertices (anything else is reported as malformed).
    bounds_xy : (x0, y0, x1, y1) the vertices must lie in (e.g. the image), or None.
    min_points : the fewest distinct vertices allowed (3 for polygons, 1 for points).
    """
    try:
        a = np.asarray(xy, dtype=np.float64)
    except (TypeError, ValueError):
        return "malformed coordinates"
    if a.ndim != 2 or a.shape[1] != 2:
        return "malformed coordinates"
    if not np.isfinite(a).all():
        return NON_FINITE
    if len(a) and np.abs(a).max() > MAX_COORDINATE:
        return TOO_LARGE
    if bounds_xy is not None and len(a):
        x0, y0, x1, y1 = bounds_xy
        if a[:, 0].min() < x0 or a[:, 1].min() < y0 or a[:, 0].max() > x1 or a[:, 1].max() > y1:
            return OUTSIDE
    if len(np.unique(a, axis=0)) < min_points:
        return DEGENERATE
    return None


def geometry_problems(
    geoms: Any, *, bounds_xy: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """(N,) object array: the reason each shapely geometry is unusable, None where it is fine.

    ``None`` entries (no geometry) are left to the caller (reason None). Vectorised: one pass over
    all coordinates, so whole-slide tables of 10^6 polygons stay cheap.
    """
    import shapely

    arr = np.asarray(geoms, dtype=object).reshape(-1)
    out = np.full(len(arr), None, dtype=object)
    present = np.flatnonzero(np.array([g is not None for g in arr], dtype=bool)) if len(arr) else np.zeros(0, int)
    if not len(present):
        return out
    sub = arr[present]
    coords, index = shapely.get_coordinates(sub, return_index=True)
    n = len(sub)

    def per_geometry(row_bad: np.ndarray) -> np.ndarray:
        return np.bincount(index[row_bad], minlength=n) > 0 if len(index) else np.zeros(n, dtype=bool)

    finite = np.isfinite(coords).all(axis=1)
    reason = np.full(n, None, dtype=object)
    nonfinite = per_geometry(~finite)
    reason[nonfinite] = NON_FINITE
    with np.errstate(invalid="ignore"):
        huge = per_geometry(finite & (np.abs(coords) > MAX_COORDINATE).any(axis=1)) & ~nonfinite
    reason[huge] = TOO_LARGE
    if bounds_xy is not None:
        x0, y0, x1, y1 = bounds_xy
        out_rows = finite & ((coords[:, 0] < x0) | (coords[:, 1] < y0) | (coords[:, 0] > x1) | (coords[:, 1] > y1))
        outside = per_geometry(out_rows) & (reason == None)  # noqa: E711 - elementwise on an object array
        reason[outside] = OUTSIDE
    ok = np.flatnonzero(reason == None)  # noqa: E711
    kinds = shapely.get_type_id(sub[ok])
    polygonal = ok[np.isin(kinds, (3, 6))]
    if len(polygonal):
        # Only a zero-area polygon can have < 3 distinct vertices; count those few exactly (a
        # self-intersecting bow-tie also has zero signed area but is repaired, not dropped).
        for i in polygonal[shapely.area(sub[polygonal]) <= 0]:
            if len(np.unique(coords[index == i], axis=0)) < 3:
                reason[i] = DEGENERATE
    out[present] = reason
    return out


def describe(reasons: Counter) -> str:
    """'2 non-finite coordinate, 1 outside the image': counts per reason, most frequent first."""
    return ", ".join(f"{c} {r}" for r, c in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


def raise_if_strict(source: str | Path, reasons: Counter, *, what: str = "object") -> None:
    """Under :func:`strict_geometry`, CosynthError when any object was dropped."""
    n = sum(reasons.values())
    if n and is_strict():
        noun = what if n == 1 else f"{what}s"
        raise CosynthError(f"{source}: {n} {noun} with unusable geometry ({describe(reasons)}) (--strict-geometry)")


def report_dropped(source: str | Path, reasons: Counter, *, what: str = "object") -> None:
    """Warn (or, when strict, raise) about objects dropped for the given reasons."""
    n = sum(reasons.values())
    if not n:
        return
    raise_if_strict(source, reasons, what=what)
    noun = what if n == 1 else f"{what}s"
    warnings.warn(f"{source}: {n} {noun} with unusable geometry dropped ({describe(reasons)})",
                  GeometryWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------- JSON
MAX_JSON_DEPTH = 64


def json_depth_ok(text: str | bytes, *, limit: int = MAX_JSON_DEPTH) -> bool:
    """False when brackets nest deeper than ``limit`` (checked before parsing, outside strings)."""
    import re

    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= limit:
        return True
    # Strings may hold brackets: blank them out, then track depth over the rest.
    stripped = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', data)
    opens = np.frombuffer(stripped, dtype=np.uint8)
    step = np.isin(opens, (ord("["), ord("{"))).astype(np.int64) - np.isin(opens, (ord("]"), ord("}"))).astype(np.int64)
    return not len(step) or int(np.cumsum(step).max()) <= limit


def expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    """``value`` if it is an instance of ``kind``, else CosynthError naming ``where``."""
    if isinstance(kind, tuple):
        ok = isinstance(value, kind) and not (bool not in kind and isinstance(value, bool))
    else:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if not ok:
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise CosynthError(f"{where}: expected {names}, got {type(value).__name__} {str(value)[:40]!r}")
    return value


# ----------------------------------------------------------------------------------------- records
def _number(v: Any, *, positive: bool = False) -> bool:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and abs(v) <= MAX_COORDINATE
    return bool(ok and (v > 0 if positive else True))


def provenance_from(d: Any, where: str):
    """A :class:`~wsi_cosynth.records.Provenance` from its stored dict, checked field by field."""
    from .records import Provenance

    if not isinstance(d, dict):
        raise CosynthError(f"{where}: provenance must be an object, got {type(d).__name__}")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise CosynthError(f"{where}: provenance name must be a non-empty string, got {str(name)[:40]!r}")
    for key in ("source", "tissue", "patient", "split", "labels_by"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise CosynthError(f"{where}: provenance {key} must be a string, got {str(d[key])[:40]!r}")
    for key in ("x_slide", "y_slide", "mpp"):
        if d.get(key) is not None and not _number(d[key], positive=key == "mpp"):
            raise CosynthError(f"{where}: provenance {key} must be a finite number, got {str(d[key])[:40]!r}")
    return Provenance.from_dict(d)


def placement_from(d: Any, where: str):
    """A :class:`~wsi_cosynth.records.SlidePlacement` (or None) from its stored dict."""
    from .records import SlidePlacement

    if d is None:
        return None
    if not (isinstance(d, dict) and _number(d.get("x0")) and _number(d.get("y0"))
            and _number(d.get("scale"), positive=True)):
        raise CosynthError(f"{where}: placement must be {{x0, y0, scale > 0}} finite numbers, got {str(d)[:60]}")
    return SlidePlacement(float(d["x0"]), float(d["y0"]), float(d["scale"]))
