"""Which nuclei ``make_valid`` repaired while annotations were loaded, for a report the user can act on.

:func:`repair_records` compares the geometries as read with those kept after cleaning; each
repaired nucleus becomes a :class:`Repair` (its position in the file, where it is, its area
before and after). :func:`write_repair_report` writes them as CSV (atomically).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

REPORT_NAME = "repairs.csv"
COLUMNS = ("source", "index", "x_level0", "y_level0", "area_before_px", "area_after_px")


@dataclass(frozen=True)
class Repair:
    """One nucleus repaired with ``make_valid``.

    ``index``: 0-based position of the nucleus among the geometries read from ``source`` (file
    order); ``x_level0``/``y_level0``: centroid of the repaired outline (level-0 pixels);
    areas in square level-0 pixels (the area of an invalid ring is its signed-shoelace value, e.g.
    close to 0 for a figure-eight).
    """

    source: str
    index: int
    x_level0: float
    y_level0: float
    area_before_px: float
    area_after_px: float


def repair_records(read: list | np.ndarray, kept: np.ndarray, keep: np.ndarray, source: str) -> tuple[Repair, ...]:
    """The repairs among ``read`` (geometries as read, None for dropped) given the cleaned
    ``kept`` geometries and their indices ``keep`` into ``read``."""
    original = np.asarray(read, dtype=object).reshape(-1)
    if not len(keep):
        return ()
    before = original[keep]
    present = np.array([g is not None for g in before])
    if not present.any():
        return ()
    changed = np.zeros(len(keep), dtype=bool)
    changed[present] = ~shapely.is_valid(before[present].astype(object))
    out = []
    for j in np.flatnonzero(changed):
        after = kept[j]
        c = after.centroid
        out.append(Repair(source=str(source), index=int(keep[j]), x_level0=round(float(c.x), 2),
                          y_level0=round(float(c.y), 2), area_before_px=round(abs(float(before[j].area)), 2),
                          area_after_px=round(float(after.area), 2)))
    return tuple(out)


def write_repair_report(path: str | Path, repairs: tuple[Repair, ...] | list[Repair]) -> Path:
    """Write ``repairs`` as CSV (columns :data:`COLUMNS`) at ``path``, atomically."""
    from ..atomic import atomic_path

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in repairs:
        writer.writerow([r.source, r.index, r.x_level0, r.y_level0, r.area_before_px, r.area_after_px])
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
    return Path(path)


def concat_repairs(tables: list) -> tuple[tuple[Repair, ...], int]:
    """Repairs of tables read one after another from one file, indices shifted to file order,
    and the number of geometries read in all (tables without a record count their nuclei)."""
    from dataclasses import replace

    out: list[Repair] = []
    offset = 0
    for t in tables:
        out.extend(replace(r, index=r.index + offset) for r in getattr(t, "repairs", ()))
        offset += int(getattr(t, "n_read", len(t)))
    return tuple(out), offset
