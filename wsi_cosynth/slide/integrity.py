"""Structural checks of a slide file before a backend decodes it.

A TIFF-based slide (.svs, .tif, .ndpi, OME-TIFF, Philips TIFF) whose end was cut off still opens
in OpenSlide when the first pages survive; regions from the lost pages then fail late, or
(for associated images) never. :func:`check_slide_file` reads the TIFF directory chain with
tifffile and refuses a file in which any page's directory or pixel data lies beyond the end of
the file, or whose directory chain is corrupt. Other containers (DICOM, MIRAX, PNG, JPEG) are left
to their readers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from ..errors import CosynthError

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@contextlib.contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    """Collect tifffile's log records (it logs, rather than raises, damaged directory chains)."""
    records: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("tifffile")
    handler = _Collect(level=logging.WARNING)
    old_propagate, old_disabled = logger.propagate, logger.disabled
    logger.addHandler(handler)
    logger.propagate, logger.disabled = False, False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.disabled = old_propagate, old_disabled


def check_slide_file(path: Path) -> None:
    """CosynthError naming ``path`` when it is empty, or a TIFF with pages beyond its end."""
    size = path.stat().st_size
    if size == 0:
        raise CosynthError(f"slide {path} is empty (0 bytes)")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in _TIFF_MAGIC:
        return
    import tifffile

    with _tifffile_log() as log:
        try:
            with tifffile.TiffFile(path) as tif:
                for i, page in enumerate(tif.pages):
                    offsets, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
                    ends = [o + c for o, c in zip(offsets, counts) if c]
                    if ends and max(ends) > size:
                        raise CosynthError(
                            f"slide {path} is truncated or damaged: page {i} has pixel data up to byte "
                            f"{max(ends)} but the file has {size} bytes")
        except CosynthError:
            raise
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for a damaged header
            raise CosynthError(f"slide {path} has a damaged TIFF structure ({type(exc).__name__}: {exc})") from None
    damaged = [m for m in log if "offset" in m or "corrupt" in m or "truncat" in m]
    if damaged:
        raise CosynthError(f"slide {path} has a damaged TIFF directory chain ({' '.join(damaged[0].split())[:160]})")
