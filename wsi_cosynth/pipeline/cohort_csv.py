"""The cohort CSV: one row per slide of a study.

Columns (a header row names them; case and surrounding spaces do not matter; other columns are
ignored and reported once):

``slide`` (required)
    the slide file; a relative path is relative to the CSV's own folder.
``annotations``
    its nuclei annotations (relative like ``slide``); empty: a sidecar next to the slide.
``patient``
    who the slide belongs to (default: the slide's file stem). Splits keep a patient's slides together.
``tissue``
    the slide's tissue type (the synthesis prompt; strata of the split).
``slide_mpp``
    the slide's microns per pixel, for files that do not record it.
``split``
    ``train``, ``val`` or ``test``: a fixed assignment for the patient, which wins over the draw.

Errors name the file and the line: a missing ``slide`` column or value, a slide listed twice, a
``slide_mpp`` that is not a positive number, an unknown split, one patient given two splits.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CosynthError, require_file

COLUMNS: tuple[str, ...] = ("slide", "annotations", "patient", "tissue", "slide_mpp", "split")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MAX_CSV_BYTES = 64 << 20  # a CSV of millions of slides is not a cohort file


@dataclass(frozen=True)
class CohortRow:
    """One slide of the cohort. ``slide``/``annotations`` are as written in the CSV; ``slide_path``
    and ``annotations_path`` are resolved against the CSV's folder; ``line`` is the CSV line."""

    line: int
    slide: str
    slide_path: Path
    annotations_path: Path | None
    patient: str
    tissue: str | None
    slide_mpp: float | None
    split: str | None


@dataclass(frozen=True)
class Cohort:
    """The rows of a cohort CSV, in file order, and the columns it ignored."""

    path: Path
    rows: tuple[CohortRow, ...]
    ignored_columns: tuple[str, ...]


def read_cohort_csv(path: str | Path) -> Cohort:
    """Read and check a cohort CSV (see the module docstring).

    Raises
    ------
    CosynthError
        Unreadable file, no ``slide`` column, an empty or invalid cell, a duplicate slide, a
        patient with two fixed splits, no rows.
    """
    p = require_file(path, "cohort CSV")
    where = f"cohort CSV {p}"
    try:
        if p.stat().st_size > MAX_CSV_BYTES:
            raise CosynthError(f"{where} is larger than {MAX_CSV_BYTES >> 20} MiB")
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CosynthError(f"{where} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise CosynthError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if "\0" in text:
        raise CosynthError(f"{where} holds NUL bytes: not a CSV text file")
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise CosynthError(f"{where}: {exc}") from None
    header_at = next((i for i, r in enumerate(records) if any(c.strip() for c in r)), None)
    if header_at is None:
        raise CosynthError(f"{where} is empty (expected a header row with a 'slide' column)")
    header = [c.strip().lower() for c in records[header_at]]
    if "slide" not in header:
        raise CosynthError(f"{where}: no 'slide' column in the header {records[header_at][:8]} "
                           f"(columns: {', '.join(COLUMNS)})")
    duplicated = sorted({c for c in header if c in COLUMNS and header.count(c) > 1})
    if duplicated:
        raise CosynthError(f"{where}: column(s) {duplicated} appear more than once in the header")
    index = {c: header.index(c) for c in COLUMNS if c in header}
    ignored = tuple(c for c in header if c and c not in COLUMNS)
    rows = [_row(p, where, header_at + 1 + k + 1, record, index)
            for k, record in enumerate(records[header_at + 1:]) if any(c.strip() for c in record)]
    if not rows:
        raise CosynthError(f"{where} lists no slides (only a header)")
    _check_unique_slides(where, rows)
    _check_patient_splits(where, rows)
    return Cohort(path=p, rows=tuple(rows), ignored_columns=ignored)


def _row(csv_path: Path, where: str, line: int, record: list[str], index: dict[str, int]) -> CohortRow:
    if len(record) > max(index.values()) + 1 + 64:
        raise CosynthError(f"{where} line {line}: {len(record)} cells, far more than the header has")

    def cell(name: str) -> str | None:
        i = index.get(name)
        value = record[i].strip() if i is not None and i < len(record) else ""
        if any(ord(ch) < 32 for ch in value):
            raise CosynthError(f"{where} line {line}: column {name!r} holds a control character")
        return value or None

    slide = cell("slide")
    if slide is None:
        raise CosynthError(f"{where} line {line}: the 'slide' cell is empty")
    folder = csv_path.parent
    annotations = cell("annotations")
    return CohortRow(
        line=line,
        slide=slide,
        slide_path=folder / slide,
        annotations_path=None if annotations is None else folder / annotations,
        patient=cell("patient") or Path(slide).stem or slide,
        tissue=cell("tissue"),
        slide_mpp=_mpp(where, line, cell("slide_mpp")),
        split=_split(where, line, cell("split")),
    )


def _mpp(where: str, line: int, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e4:  # also catches NaN and infinity
        raise CosynthError(f"{where} line {line}: slide_mpp {text!r} is not a positive number of microns per pixel")
    return value


def _split(where: str, line: int, text: str | None) -> str | None:
    if text is None:
        return None
    value = text.lower()
    if value not in SPLITS:
        raise CosynthError(f"{where} line {line}: split {text!r} is not one of {', '.join(SPLITS)} (or empty)")
    return value


def _check_unique_slides(where: str, rows: list[CohortRow]) -> None:
    seen: dict[str, int] = {}
    for row in rows:
        key = os.path.normpath(os.path.abspath(row.slide_path))
        if key in seen:
            raise CosynthError(f"{where} line {row.line}: slide {row.slide!r} is already listed on line {seen[key]}")
        seen[key] = row.line


def _check_patient_splits(where: str, rows: list[CohortRow]) -> None:
    fixed: dict[str, tuple[str, int]] = {}
    for row in rows:
        if row.split is None:
            continue
        first = fixed.setdefault(row.patient, (row.split, row.line))
        if first[0] != row.split:
            raise CosynthError(
                f"{where} line {row.line}: patient {row.patient!r} is given split {row.split!r} here and "
                f"{first[0]!r} on line {first[1]}; a patient's slides stay in one split"
            )
