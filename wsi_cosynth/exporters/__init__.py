"""Dataset formats: one module per format, with its writer and reader side by side.

Public API
----------
``read_dataset(path, fmt, *, taxonomy=None, class_map=None, **options)``
    Stream :class:`~wsi_cosynth.records.LabelledTile` s from a dataset. ``taxonomy=None`` keeps
    the format's own class set (e.g. ``consep`` -> the built-in CoNSeP set; a dataset written by
    this package -> the set recorded in its ``taxonomy.json``); otherwise classes are mapped by
    NAME with :func:`~wsi_cosynth.taxonomy.class_mapping` and a class with no mapping raises
    :class:`~wsi_cosynth.errors.CosynthError`.
``count_tiles(path, fmt) -> int``
    Number of tiles ``read_dataset`` will yield (cheap: no pixels are decoded).
``open_writer(fmt, out_dir, taxonomy, **options) -> DatasetWriter``
    ``add(tile)``, ``close()``, context manager; the directory appears only when complete.

Formats (``READ_FORMATS`` / ``WRITE_FORMATS``): consep, cellvit, hovernet-json, lizard, pannuke,
coco, geojson; the last four and consep (HoVer-Net's layout) are also written. Each module's
docstring gives its layout. Lizard and PanNuke are written in their own class ids when the
classes map into them (:mod:`.native_ids`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import CosynthError
from ..records import LabelledTile
from ..taxonomy import Taxonomy
from ._common import DatasetWriter, remap_tiles

# format name -> module (imported lazily: each pulls in its own heavy libraries).
_MODULES: dict[str, str] = {
    "consep": "consep",
    "cellvit": "cellvit",
    "hovernet-json": "hovernet_json",
    "lizard": "lizard",
    "pannuke": "pannuke",
    "coco": "coco",
    "geojson": "geojson",
}
READ_FORMATS: tuple[str, ...] = tuple(_MODULES)
WRITE_FORMATS: tuple[str, ...] = ("lizard", "pannuke", "coco", "geojson", "consep")

__all__ = [
    "READ_FORMATS",
    "WRITE_FORMATS",
    "DatasetWriter",
    "count_tiles",
    "open_writer",
    "read_dataset",
]


def _module(fmt: str, valid: tuple[str, ...]) -> Any:
    key = str(fmt).lower().replace("_", "-")
    if key not in valid:
        raise CosynthError(f"unknown format {fmt!r} (valid: {', '.join(valid)})")
    return importlib.import_module(f".{_MODULES[key]}", __name__)


def read_dataset(
    path: str | Path,
    fmt: str,
    *,
    taxonomy: Taxonomy | None = None,
    class_map: dict[str, str] | None = None,
    **options: Any,
) -> Iterator[LabelledTile]:
    """Stream the tiles of a dataset in format ``fmt``.

    Parameters
    ----------
    path : the dataset (a directory; a single file where the format allows it).
    fmt : one of ``READ_FORMATS``.
    taxonomy : target class set; None keeps the dataset's own.
    class_map : ``{source_name: target_name}`` overrides (see :func:`~wsi_cosynth.taxonomy.load_class_map`).
    **options : format-specific reader options (see each module's ``read``).

    Yields
    ------
    LabelledTile, one per tile, in a fixed order (sorted by name unless the format has an order).
    """
    module = _module(fmt, READ_FORMATS)
    return remap_tiles(module.read(Path(path), **options), taxonomy, class_map)


def count_tiles(path: str | Path, fmt: str) -> int:
    """The number of tiles ``read_dataset(path, fmt)`` yields."""
    return int(_module(fmt, READ_FORMATS).count(Path(path)))


def open_writer(fmt: str, out_dir: str | Path, taxonomy: Taxonomy, *, native_ids: bool = True,
                **options: Any) -> DatasetWriter:
    """A writer for format ``fmt`` (one of ``WRITE_FORMATS``) into the new directory ``out_dir``.

    ``native_ids``: Lizard and PanNuke datasets use the format's own class ids when every class
    of ``taxonomy`` maps into them by name, else ``taxonomy``'s ids with a warning in
    ``writer.notes`` and ``taxonomy.json`` (see :mod:`.native_ids`); False always writes
    ``taxonomy`` (e.g. when the user chose it). ``writer.taxonomy`` is the set written.

    Common options: ``class_map`` (dict, name overrides when tiles come in another taxonomy),
    ``overwrite`` (bool, replace a non-empty ``out_dir`` once the new one is complete).
    coco: ``segmentation="rle"`` (default, lossless) or ``"polygon"``. geojson:
    ``multipolygon=True`` keeps every part of a nucleus (default: its largest polygon).
    """
    from .native_ids import choose_ids

    module = _module(fmt, WRITE_FORMATS)
    choice = choose_ids(fmt, taxonomy, options.get("class_map")) if native_ids else None
    writer = module.Writer(Path(out_dir), choice.taxonomy if choice else taxonomy, **options)
    if choice is not None and choice.note:
        writer.ids_note = choice.note
        writer.notes.append(choice.note)
    return writer
