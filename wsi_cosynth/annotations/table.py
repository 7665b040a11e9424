"""One table for a slide's annotations: nuclei (polygon or point + class name) and tissue regions.

Coordinates are level-0 slide pixels (x right, y down). Per-tile queries go through shapely
STRtrees built on first use. Invalid polygons are repaired with ``make_valid`` (keeping the
polygonal part) or skipped when nothing polygonal remains; both are counted and reported with
one :class:`AnnotationWarning` per file.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import GeometryCollection, MultiPolygon, Point, Polygon

from ..errors import CosynthError
from .repairs import repair_records
from ..validation import describe, geometry_problems, raise_if_strict

UNCLASSIFIED = "unclassified"


class AnnotationWarning(UserWarning):
    """Annotations were repaired or skipped while loading (counts in the message)."""


@dataclass
class AnnotationTable:
    """Nuclei and tissue regions of one slide, in level-0 pixels.

    Attributes
    ----------
    nuclei : (N,) object array of shapely Polygon / MultiPolygon / Point.
    classes : (N,) object array of class NAMES (str).
    regions : (M,) object array of shapely Polygon / MultiPolygon (tissue areas).
    region_names : (M,) object array of tissue-type names (str).
    source : the file(s) read.
    n_repaired, n_skipped : geometries fixed with make_valid / dropped as unusable.
    """

    nuclei: np.ndarray
    classes: np.ndarray
    regions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    region_names: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    source: str = ""
    n_repaired: int = 0
    n_skipped: int = 0
    _tree: shapely.STRtree | None = field(default=None, repr=False, compare=False)
    _region_tree: shapely.STRtree | None = field(default=None, repr=False, compare=False)
    _centroids: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.nuclei)

    @property
    def is_point(self) -> np.ndarray:
        """(N,) bool, True where the nucleus is only a point (no outline)."""
        return shapely.get_type_id(self.nuclei) == 0 if len(self.nuclei) else np.zeros(0, dtype=bool)

    @property
    def point_only(self) -> bool:
        """True when there are nuclei and none of them has an outline."""
        return len(self.nuclei) > 0 and bool(self.is_point.all())

    def class_names(self) -> list[str]:
        """Distinct nucleus class names, sorted."""
        return sorted({str(c) for c in self.classes})

    def centroids(self) -> np.ndarray:
        """(N, 2) float64 level-0 (x, y) centroids of the nuclei (the point itself for points)."""
        if self._centroids is None:
            c = shapely.centroid(self.nuclei) if len(self.nuclei) else np.zeros(0, dtype=object)
            self._centroids = np.stack([shapely.get_x(c), shapely.get_y(c)], axis=1) if len(c) else np.zeros((0, 2))
        return self._centroids

    def bounds(self) -> tuple[float, float, float, float] | None:
        """(x0, y0, x1, y1) level-0 bounds of all nuclei, None when there are none."""
        if not len(self.nuclei):
            return None
        b = shapely.total_bounds(self.nuclei)
        return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))

    def query_nuclei(self, box_level0: tuple[float, float, float, float]) -> np.ndarray:
        """(K,) int64 indices (ascending) of nuclei intersecting the level-0 box (x0, y0, x1, y1)."""
        if not len(self.nuclei):
            return np.zeros(0, dtype=np.int64)
        if self._tree is None:
            self._tree = shapely.STRtree(self.nuclei)
        hits = self._tree.query(shapely.box(*box_level0), predicate="intersects")
        return np.sort(np.asarray(hits, dtype=np.int64))

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
        return AnnotationTable(
            nuclei=np.concatenate([self.nuclei, other.nuclei]),
            classes=np.concatenate([self.classes, other.classes]),
            regions=np.concatenate([self.regions, other.regions]),
            region_names=np.concatenate([self.region_names, other.region_names]),
            source=" + ".join(s for s in (self.source, other.source) if s),
            n_repaired=self.n_repaired + other.n_repaired,
            n_skipped=self.n_skipped + other.n_skipped,
        )


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
