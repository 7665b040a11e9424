"""One table for a slide's annotations: nuclei (polygon or point + class name) and tissue regions.

Coordinates are level-0 slide pixels (x right, y down). Per-tile queries go through shapely
STRtrees built on first use. Invalid polygons are repaired with ``make_valid`` (keeping the
polygonal part) or skipped when nothing polygonal remains; both are counted and reported with
one :class:`AnnotationWarning` per file.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import GeometryCollection, MultiPolygon, Point, Polygon

from ..errors import CosynthError
from .repairs import concat_repairs, repair_records
from ..validation import describe, geometry_problems, raise_if_strict

UNCLASSIFIED = "unclassified"


class AnnotationWarning(UserWarning):
    """Annotations were repaired or skipped while loading (counts in the message)."""


class AnnotationTable:
    """Nuclei and tissue regions of one slide, in level-0 pixels.

    Nuclei are stored packed (:class:`~.packed.PackedGeometries`: one WKB buffer and per-nucleus
    bounds, centroid, area and type arrays, ~350 bytes per 16-vertex polygon) with an STRtree over
    their bounding boxes; shapely geometries are decoded only for the nuclei a query returns.

    Attributes
    ----------
    nuclei : (N,) object array of shapely Polygon / MultiPolygon / Point, decoded on access
        (use :meth:`geometries` for a subset).
    classes : (N,) object array of class NAMES (str; one shared object per distinct name).
    regions : (M,) object array of shapely Polygon / MultiPolygon (tissue areas).
    region_names : (M,) object array of tissue-type names (str).
    source : the file(s) read.
    n_repaired, n_skipped : geometries fixed with make_valid / dropped as unusable.
    """

    def __init__(
        self,
        nuclei: np.ndarray | None = None,
        classes: np.ndarray | None = None,
        regions: np.ndarray | None = None,
        region_names: np.ndarray | None = None,
        source: str = "",
        n_repaired: int = 0,
        n_skipped: int = 0,
        *,
        packed=None,
    ) -> None:
        from .packed import PackedGeometries

        if packed is None:
            packed = PackedGeometries.pack(np.zeros(0, dtype=object) if nuclei is None else nuclei)
        self.packed: PackedGeometries = packed
        names = np.zeros(0, dtype=object) if classes is None else np.asarray(classes, dtype=object).reshape(-1)
        shared: dict[str, str] = {}
        self.classes = np.array([shared.setdefault(str(c), str(c)) for c in names], dtype=object).reshape(-1)
        if len(self.classes) != len(packed):
            raise CosynthError(f"annotations {source}: {len(packed)} nuclei but {len(self.classes)} class names")
        self.regions = np.zeros(0, dtype=object) if regions is None else np.asarray(regions, dtype=object).reshape(-1)
        self.region_names = (np.zeros(0, dtype=object) if region_names is None
                             else np.asarray(region_names, dtype=object).reshape(-1))
        self.source = str(source)
        self.n_repaired = int(n_repaired)
        self.n_skipped = int(n_skipped)
        self._tree: shapely.STRtree | None = None
        self._region_tree: shapely.STRtree | None = None

    def __len__(self) -> int:
        return len(self.packed)

    def __repr__(self) -> str:
        return (f"AnnotationTable({len(self)} nuclei, {len(self.regions)} regions, source={self.source!r}, "
                f"{self.packed.nbytes / 1e6:.1f} MB packed)")

    @property
    def nuclei(self) -> np.ndarray:
        """(N,) object array of every nucleus as a shapely geometry (decoded now: large for big slides)."""
        return self.packed.take(np.arange(len(self)))

    def geometries(self, indices: np.ndarray) -> np.ndarray:
        """(K,) object array of the shapely geometries of nuclei ``indices``."""
        return self.packed.take(indices)

    @property
    def is_point(self) -> np.ndarray:
        """(N,) bool, True where the nucleus is only a point (no outline)."""
        return self.packed.type_ids == 0

    @property
    def point_only(self) -> bool:
        """True when there are nuclei and none of them has an outline."""
        return len(self) > 0 and bool(self.is_point.all())

    def class_names(self) -> list[str]:
        """Distinct nucleus class names, sorted."""
        return sorted({str(c) for c in self.classes})

    def centroids(self) -> np.ndarray:
        """(N, 2) float64 level-0 (x, y) centroids of the nuclei (the point itself for points)."""
        return self.packed.centroids

    def areas(self) -> np.ndarray:
        """(N,) float64 areas of the nuclei in level-0 pixels (0 for points)."""
        return self.packed.areas

    def bounds(self) -> tuple[float, float, float, float] | None:
        """(x0, y0, x1, y1) level-0 bounds of all nuclei, None when there are none."""
        if not len(self):
            return None
        b = self.packed.bounds
        return (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))

    def query_nuclei(self, box_level0: tuple[float, float, float, float]) -> np.ndarray:
        """(K,) int64 indices (ascending) of nuclei intersecting the level-0 box (x0, y0, x1, y1)."""
        if not len(self):
            return np.zeros(0, dtype=np.int64)
        if self._tree is None:
            self._tree = self.packed.box_tree()
        box = shapely.box(*box_level0)
        cand = np.sort(np.asarray(self._tree.query(box), dtype=np.int64))
        if not len(cand):
            return cand
        # Bounding boxes overlap: test the outlines themselves, decoded for these few only.
        return cand[shapely.intersects(self.packed.take(cand), box)]

    def query_regions(self, box_level0: tuple[float, float, float, float]) -> np.ndarray:
        """(K,) int64 indices of tissue regions intersecting the level-0 box."""
        if not len(self.regions):
            return np.zeros(0, dtype=np.int64)
        if self._region_tree is None:
            self._region_tree = shapely.STRtree(self.regions)
        return np.sort(np.asarray(self._region_tree.query(shapely.box(*box_level0), predicate="intersects"), dtype=np.int64))

    def tissue_at(self, box_level0: tuple[float, float, float, float]) -> str | None:
        """Name of the tissue region covering most of the box, None when no region touches it."""
        idx = self.query_regions(box_level0)
        if not len(idx):
            return None
        areas = shapely.area(shapely.intersection(self.regions[idx], shapely.box(*box_level0)))
        best = int(np.argmax(areas))
        return str(self.region_names[idx[best]]) if areas[best] > 0 else None

    def merged(self, other: "AnnotationTable") -> "AnnotationTable":
        """This table with ``other``'s nuclei and regions appended."""
        return concat_tables([self, other], source=" + ".join(s for s in (self.source, other.source) if s))


def concat_tables(tables: list[AnnotationTable], source: str) -> AnnotationTable:
    """One table with the nuclei and regions of ``tables`` in order (nothing decoded)."""
    from .packed import PackedGeometries

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=object)

    table = AnnotationTable(
        classes=cat([t.classes for t in tables]),
        regions=cat([t.regions for t in tables]),
        region_names=cat([t.region_names for t in tables]),
        source=source,
        n_repaired=sum(t.n_repaired for t in tables),
        n_skipped=sum(t.n_skipped for t in tables),
        packed=PackedGeometries.concat([t.packed for t in tables]),
    )
    table.repairs, table.n_read = concat_repairs(tables)
    return table


def polygonal_part(geom: shapely.Geometry) -> Polygon | MultiPolygon | None:
    """The polygonal content of a geometry (e.g. after make_valid), None if there is none."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return None if geom.is_empty else geom
    if isinstance(geom, GeometryCollection):
        polys: list[Polygon] = []
        for g in geom.geoms:
            part = polygonal_part(g)
            if isinstance(part, Polygon):
                polys.append(part)
            elif isinstance(part, MultiPolygon):
                polys.extend(part.geoms)
        if not polys:
            return None
        return polys[0] if len(polys) == 1 else MultiPolygon(polys)
    return None


def clean_geometries(geoms: list | np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Repair or drop unusable geometries.

    Returns
    -------
    clean : (K,) object array of valid Polygon / MultiPolygon / Point geometries.
    keep : (K,) int64 indices into ``geoms`` of the geometries kept.
    n_repaired, n_skipped : counts.
    """
    arr = np.asarray(geoms, dtype=object).reshape(-1)
    if not len(arr):
        return arr, np.zeros(0, dtype=np.int64), 0, 0
    missing = np.array([g is None for g in arr])
    arr = np.where(missing, shapely.Point(), arr)
    valid = shapely.is_valid(arr) & ~shapely.is_empty(arr)
    out = arr.copy()
    n_repaired = 0
    for i in np.flatnonzero(~valid & ~shapely.is_empty(arr)):
        try:
            fixed = polygonal_part(shapely.make_valid(arr[i])) if not isinstance(arr[i], Point) else None
        except shapely.errors.GEOSException:  # e.g. a mixed-dimension collection: not repairable
            fixed = None
        if fixed is not None and fixed.area > 0:
            out[i] = fixed
            valid[i] = True
            n_repaired += 1
    kinds = shapely.get_type_id(out)
    # Points (0), Polygons (3) and MultiPolygons (6) are nuclei; lines and empties are not.
    usable = valid & np.isin(kinds, (0, 3, 6))
    usable &= (kinds == 0) | (shapely.area(out) > 0)
    keep = np.flatnonzero(usable)
    return out[keep], keep.astype(np.int64), n_repaired, int(len(arr) - len(keep))


def make_table(
    nuclei: list, classes: list[str], *, regions: list | None = None, region_names: list[str] | None = None,
    source: str | Path = "",
) -> AnnotationTable:
    """Build an :class:`AnnotationTable`, repairing/skipping bad geometries with one warning."""
    if len(nuclei) != len(classes):
        raise CosynthError(f"annotations {source}: {len(nuclei)} geometries but {len(classes)} class names")
    # One validation layer: non-finite, absurd or degenerate geometry is dropped and counted (an
    # error under strict_geometry) before shapely sees it; GEOS cannot orient NaN rings.
    reasons: Counter = Counter()
    nuclei = _drop_unusable(nuclei, reasons)
    geo, keep, n_rep, n_skip = clean_geometries(nuclei)
    repairs = repair_records(nuclei, geo, keep, str(source)) if n_rep else ()
    cls = np.asarray([str(c) for c in classes], dtype=object)[keep] if len(keep) else np.zeros(0, dtype=object)
    reg_in = _drop_unusable(list(regions or []), reasons)
    reg, rkeep, r_rep, r_skip = clean_geometries(reg_in)
    reg_poly = shapely.get_type_id(reg) != 0 if len(reg) else np.zeros(0, dtype=bool)
    names = np.asarray([str(n) for n in (region_names or [])], dtype=object)
    names = names[rkeep][reg_poly] if len(rkeep) else np.zeros(0, dtype=object)
    reg = reg[reg_poly]
    n_rep += r_rep
    n_skip += r_skip + int((~reg_poly).sum())
    n_bad = sum(reasons.values())
    if n_skip > n_bad:
        reasons["not a polygon or point"] += n_skip - n_bad
    raise_if_strict(f"annotations {source}", reasons)
    if n_rep or n_skip:
        warnings.warn(
            f"annotations {source}: {n_rep} invalid polygon(s) repaired with make_valid, "
            f"{n_skip} unusable geometr{'y' if n_skip == 1 else 'ies'} skipped"
            + (f" ({describe(reasons)})" if n_skip else ""),
            AnnotationWarning,
            stacklevel=3,
        )
    table = AnnotationTable(nuclei=geo, classes=cls, regions=reg, region_names=names, source=str(source),
                            n_repaired=n_rep, n_skipped=n_skip)
    table.repairs = repairs  # which nuclei make_valid changed (annotations/repairs.py)
    table.n_read = len(nuclei)
    return table


def _drop_unusable(geoms: list | np.ndarray, reasons: Counter) -> list:
    """``geoms`` with unusable ones (see :mod:`wsi_cosynth.validation`) replaced by None, counted."""
    problems = geometry_problems(geoms)
    bad = np.flatnonzero(problems != None)  # noqa: E711 - elementwise on an object array
    if not len(bad):
        return list(geoms)
    reasons.update(problems[bad].tolist())
    out = list(geoms)
    for i in bad:
        out[i] = None
    return out
