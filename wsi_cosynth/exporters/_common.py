"""Shared pieces of the format modules: the writer base class, safe file loading, class remapping.

Every loader here turns a failure to read (missing file, corrupt bytes, wrong container) into a
:class:`CosynthError` that names the file, so a bad input never surfaces as a traceback.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import CosynthError, optional_file, require_file
from ..png import write_png as save_png  # every writer's one PNG encoder (see png.py for why)
from ..records import LabelledTile
from ..taxonomy import Taxonomy, class_mapping

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# The largest instance count any format here may carry per tile; all maps are int32.
MAX_INSTANCES = int(np.iinfo(np.int32).max)
TAXONOMY_FILE = "taxonomy.json"
# Dataset metadata key naming the model that made the labels (taxonomy.json, COCO info, GeoJSON index.json).
LABELS_BY_KEY = "labels_by"
# Dataset tiles: a 1 x 1 image is damage, and a header claiming gigapixels is a decompression bomb.
MIN_IMAGE_SIDE = 2
MAX_IMAGE_PIXELS = 16384 * 16384


# ----------------------------------------------------------------------------------------- loading
def load_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB image from a PNG/JPEG/TIFF file; CosynthError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    p = require_file(path, "image")
    try:
        with Image.open(p) as im:
            _check_image_size(p, im.size)
            im.load()
            if im.mode not in ("RGB",):
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # a header claiming billions of pixels
        raise CosynthError(f"image {p} is too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise CosynthError(f"image {p} cannot be read: {exc}") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise CosynthError(f"image {p} cannot be read as RGB (decoded shape {arr.shape})")
    return arr


def _check_image_size(path: Path, size_wh: tuple[int, int]) -> None:
    """A dataset tile is at least MIN_IMAGE_SIDE px a side and at most MAX_IMAGE_PIXELS pixels."""
    w, h = int(size_wh[0]), int(size_wh[1])
    if min(w, h) < MIN_IMAGE_SIDE:
        raise CosynthError(f"image {path} is {w} x {h} px: a degenerate tile (at least {MIN_IMAGE_SIDE} px a side)")
    if w * h > MAX_IMAGE_PIXELS:
        raise CosynthError(
            f"image {path} claims {w} x {h} px ({w * h / 1e6:.0f} Mpx), more than a dataset tile may have "
            f"({MAX_IMAGE_PIXELS / 1e6:.0f} Mpx); whole slides are read with --slide"
        )


def load_npy(path: str | Path, *, allow_pickle: bool = False, mmap: bool = False) -> Any:
    """np.load with errors naming the file."""
    p = require_file(path, "array file")
    try:
        return np.load(p, allow_pickle=allow_pickle, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError, TypeError) as exc:
        raise CosynthError(f"{p} is not a readable .npy file: {exc}") from None
    except Exception as exc:  # unpickling errors come in many types
        raise CosynthError(f"{p} is not a readable .npy file: {type(exc).__name__}: {exc}") from None


def load_mat(path: str | Path) -> dict[str, np.ndarray]:
    """scipy.io.loadmat without MATLAB's header keys; errors name the file."""
    import scipy.io

    p = require_file(path, "label file")
    try:
        data = scipy.io.loadmat(p)
    except NotImplementedError:
        raise CosynthError(f"{p}: MATLAB v7.3 (HDF5) files are not supported; save as v5 (savemat)") from None
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError, OSError...
        raise CosynthError(f"{p} is not a readable MATLAB .mat file: {type(exc).__name__}: {exc}") from None
    return {k: v for k, v in data.items() if not k.startswith("__")}


def load_json(path: str | Path) -> Any:
    """JSON (bare NaN/Infinity accepted, as QuPath 0.4 writes them); errors name the file."""
    from ..validation import MAX_JSON_DEPTH, json_depth_ok

    p = require_file(path, "JSON file")
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
        if not json_depth_ok(raw):
            raise CosynthError(f"{p}: JSON nested deeper than {MAX_JSON_DEPTH} levels (no format here needs that)")
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CosynthError(f"{p} is not valid JSON: {type(exc).__name__}: {exc}") from None
    except OSError as exc:
        raise CosynthError(f"{p} cannot be read: {exc.strerror or exc}") from None


def require_key(data: dict, key: str, path: Path | str, what: str = "key") -> Any:
    if not isinstance(data, dict) or key not in data:
        found = sorted(data)[:12] if isinstance(data, dict) else type(data).__name__
        raise CosynthError(f"{path}: missing {what} {key!r} (found: {found})")
    return data[key]


def as_instance_map(arr: np.ndarray, path: Path | str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Check an instance map is a 2-D non-negative integer array (optionally of ``shape``) -> int64."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise CosynthError(f"{path}: instance map must be 2-D (H, W), got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise CosynthError(f"{path}: instance map holds non-integer values")
    elif a.dtype.kind not in "iub":
        raise CosynthError(f"{path}: instance map must be integer, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise CosynthError(f"{path}: instance map holds negative ids")
    if shape is not None and a.shape != tuple(shape):
        raise CosynthError(f"{path}: label shape {a.shape} does not match image shape {tuple(shape)}")
    return a


def numeric_array(value: Any, path: Path | str, key: str, *, integer: bool = True) -> np.ndarray:
    """``value`` as a finite numeric array (integer-valued when ``integer``); CosynthError otherwise.

    MATLAB cell and struct arrays load as object arrays: an error naming the key, not a cast failure.
    """
    a = np.asarray(value)
    if a.dtype.kind not in "iubf":
        raise CosynthError(f"{path}: {key} must be a numeric array, got {a.dtype} (a cell or struct array?)")
    if a.dtype.kind == "f" and (not np.isfinite(a).all() or (integer and not np.all(a == np.round(a)))):
        raise CosynthError(f"{path}: {key} holds {'non-integer' if integer else 'non-finite'} values")
    if integer and a.size and (a.min() < -(2**31) or a.max() >= 2**31):
        raise CosynthError(f"{path}: {key} holds values beyond the int32 range")
    return a


def list_stems(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """{stem: path} of files in ``folder`` with one of ``suffixes`` (sorted by stem)."""
    out: dict[str, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in suffixes and not p.name.startswith("."):
                # A name that says "tile" but is a directory, FIFO or dangling link is an error,
                # not a tile that silently vanishes.
                out.setdefault(p.stem, require_file(p, "dataset file"))
    return out


def read_taxonomy_file(folder: Path) -> Taxonomy | None:
    """The taxonomy a dataset written by this package recorded beside its files, if any."""
    p = folder / TAXONOMY_FILE
    return Taxonomy.from_dict(load_json(p)) if optional_file(p, "taxonomy file") else None


def _add_to_json(path: Path, fields: dict) -> None:
    record = json.loads(path.read_text())
    record.update(fields)
    path.write_text(json.dumps(record, indent=1) + "\n")


def write_taxonomy_file(folder: Path, taxonomy: Taxonomy, note: str | None = None, *, extra: dict | None = None) -> None:
    """``taxonomy.json``: the class set, ``ids_follow`` (whose ids the files use), an optional note
    and format-specific ``extra`` fields; a note is added to the fields already there."""
    from .native_ids import taxonomy_record

    p = folder / TAXONOMY_FILE
    record = json.loads(p.read_text()) if note and p.is_file() else {}
    record.update(taxonomy_record(taxonomy, note))
    record.update(extra or {})
    p.write_text(json.dumps(record, indent=1) + "\n")


def classes_in(taxonomy: Taxonomy, classes: np.ndarray, path: Path | str) -> np.ndarray:
    """Check class ids are 1..K of ``taxonomy``; the error names the file."""
    cls = np.asarray(classes).reshape(-1).astype(np.int64)
    taxonomy.check_ids(cls, where=str(path))
    return cls


# ----------------------------------------------------------------------------------------- remap
class ClassRemapper:
    """Maps tiles into a target taxonomy by class NAME (cached lookup tables per source set)."""

    def __init__(self, target: Taxonomy, class_map: dict[str, str] | None = None) -> None:
        self.target = target
        self.class_map = class_map
        self._luts: dict[Taxonomy, np.ndarray] = {}

    def __call__(self, tile: LabelledTile) -> LabelledTile:
        if tile.taxonomy == self.target and not self.class_map:
            return tile
        lut = self._luts.get(tile.taxonomy)
        if lut is None:
            lut = class_mapping(tile.taxonomy, self.target, self.class_map)
            self._luts[tile.taxonomy] = lut
        return replace(tile, classes=lut[tile.classes], taxonomy=self.target)


def remap_tiles(
    tiles: Iterator[LabelledTile], taxonomy: Taxonomy | None, class_map: dict[str, str] | None
) -> Iterator[LabelledTile]:
    if taxonomy is None:
        if class_map:
            raise CosynthError("a class map needs a target taxonomy (--taxonomy)")
        yield from tiles
        return
    remap = ClassRemapper(taxonomy, class_map)
    for tile in tiles:
        yield remap(tile)


# ----------------------------------------------------------------------------------------- writer
class BackgroundJobs:
    """Jobs run by a lazily started pool of ``threads`` threads, at most ``backlog`` waiting:
    writers overlap encoding with reading; :meth:`drain` waits for every job (raising the first
    error, or dropping errors for an output that is being aborted) and stops the pool."""

    def __init__(self, name: str, *, threads: int, backlog: int) -> None:
        self.name, self.threads, self.backlog = name, threads, backlog
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()

    def submit(self, fn, *args) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=self.name)
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self.backlog:
            self._pending.popleft().result()

    def drain(self, *, raise_errors: bool = True) -> None:
        while self._pending:
            future = self._pending.popleft()
            if raise_errors:
                future.result()
            else:
                future.exception()  # waits; the error is dropped with the output
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class DatasetWriter(ABC):
    """Streams :class:`LabelledTile` s into one dataset directory.

    The directory is built under a temporary sibling name and renamed onto ``out_dir`` by
    :meth:`close`; if the body of a ``with`` block raises (or :meth:`abort` is called), the
    temporary directory is deleted and nothing is left. Tiles in another taxonomy are mapped
    into ``taxonomy`` by class name (``class_map`` overrides the built-in aliases).

    Tile images go through :meth:`_save_image`, which PNG-encodes (``png.py``) in background
    threads (numpy and libdeflate release the GIL), so encoding one tile overlaps reading and
    labelling the next; at most ``IMAGE_BACKLOG`` images wait, which bounds the memory this takes.
    """

    fmt: str = ""
    IMAGE_THREADS = 2
    IMAGE_BACKLOG = 8

    def __init__(
        self,
        out_dir: str | Path,
        taxonomy: Taxonomy,
        *,
        class_map: dict[str, str] | None = None,
        overwrite: bool = False,
        labels_by: str | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        # The model that made the labels (a detector on an unannotated slide): every tile's
        # provenance and the dataset's own metadata say so, so nobody takes them for a pathologist's.
        self.labels_by = labels_by
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise CosynthError(f"output {self.out_dir} exists and is not a directory")
        if self.out_dir.is_dir() and any(self.out_dir.iterdir()) and not overwrite:
            raise CosynthError(f"output directory {self.out_dir} exists and is not empty (choose a new path)")
        self.taxonomy = taxonomy
        self._remap = ClassRemapper(taxonomy, class_map)
        # What the user should be told once the dataset is written (printed as warnings), and
        # the note ``taxonomy.json`` records about the ids (see native_ids.py).
        self.notes: list[str] = []
        self.ids_note: str | None = None
        self._ctx = atomic_path(self.out_dir)
        self.root: Path = self._ctx.__enter__()
        self.root.mkdir()
        self._names: set[str] = set()
        self._state = "open"
        self.n_tiles = 0
        self._images = BackgroundJobs("png", threads=self.IMAGE_THREADS, backlog=self.IMAGE_BACKLOG)

    def _save_image(self, path: Path, image: np.ndarray) -> None:
        """Write ``image`` as PNG at ``path`` in the background; errors surface by :meth:`close`."""
        self._images.submit(save_png, path, image.copy())  # the caller may reuse its buffer

    def _wait_for_images(self, *, raise_errors: bool = True) -> None:
        self._images.drain(raise_errors=raise_errors)

    def add(self, tile: LabelledTile) -> None:
        """Append one tile (file names come from ``tile.provenance.name``, unique per dataset)."""
        if self._state != "open":
            raise CosynthError(f"{self.fmt} writer for {self.out_dir} is already {self._state}")
        name = tile.provenance.name
        if not name or "/" in name or os.sep in name or name.startswith("."):
            raise CosynthError(f"tile name {name!r} cannot be used as a file name")
        if name in self._names:
            raise CosynthError(f"duplicate tile name {name!r} in {self.out_dir}")
        self._names.add(name)
        if self.labels_by is not None:
            tile = replace(tile, provenance=replace(tile.provenance, labels_by=self.labels_by))
        self._add(self._remap(tile))
        self.n_tiles += 1

    def close(self) -> None:
        """Finish the index files and move the directory into place."""
        if self._state != "open":
            return
        try:
            self._wait_for_images()
            self._finish()
            if self.ids_note and (self.root / TAXONOMY_FILE).is_file():
                write_taxonomy_file(self.root, self.taxonomy, self.ids_note)
            if self.labels_by is not None and (self.root / TAXONOMY_FILE).is_file():
                _add_to_json(self.root / TAXONOMY_FILE, {LABELS_BY_KEY: self.labels_by})
        except BaseException:
            self.abort()
            raise
        self._ctx.__exit__(None, None, None)
        self._state = "closed"

    def abort(self) -> None:
        """Delete everything written so far; ``out_dir`` is left as it was."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._wait_for_images(raise_errors=False)
        self._release()
        try:
            self._ctx.__exit__(CosynthError, CosynthError("aborted"), None)
        except CosynthError:
            pass

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _release(self) -> None:
        """Drop open handles (memory maps) before an abort deletes the files."""

    @abstractmethod
    def _add(self, tile: LabelledTile) -> None: ...

    @abstractmethod
    def _finish(self) -> None: ...
