"""A minimal reader for single-file DICOM whole-slide images that OpenSlide rejects.

OpenSlide 4 opens DICOM WSI files whose ``ImageType`` (0008,0008) names the image flavour
(VOLUME, LABEL, ...). Files written by some converters (e.g. pathml's test slide) omit it and
OpenSlide reports "Couldn't get image flavor". This module reads such a file directly: one
instance, one pyramid level, TILED_FULL frames in row-major order, explicit-VR little-endian,
frames JPEG / JPEG 2000 (encapsulated) or uncompressed. Anything else raises CosynthError.
"""

from __future__ import annotations

import io
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import CosynthError

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_PIXEL_DATA = (0x7FE0, 0x0010)
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_ENCAPSULATED = {
    "1.2.840.10008.1.2.4.50": "jpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "jpeg",
    "1.2.840.10008.1.2.4.90": "jpeg2000",
    "1.2.840.10008.1.2.4.91": "jpeg2000",
}


def is_dicom(path: str | Path) -> bool:
    """True if the file has the DICOM Part 10 preamble magic ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


class _Parser:
    """Explicit-VR little-endian element parser over an in-memory buffer."""

    def __init__(self, buf: bytes, where: str) -> None:
        self.buf, self.where = buf, where

    def _fail(self, what: str) -> CosynthError:
        return CosynthError(f"DICOM file {self.where} is truncated or corrupt ({what})")

    def header(self, pos: int) -> tuple[tuple[int, int], bytes, int, int]:
        if pos + 8 > len(self.buf):
            raise self._fail(f"element header past end at byte {pos}")
        group, elem = struct.unpack_from("<HH", self.buf, pos)
        if group == 0xFFFE:  # item / delimiters carry no VR
            (length,) = struct.unpack_from("<I", self.buf, pos + 4)
            return (group, elem), b"", length, pos + 8
        vr = self.buf[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", self.buf, pos + 8)
            return (group, elem), vr, length, pos + 12
        (length,) = struct.unpack_from("<H", self.buf, pos + 6)
        return (group, elem), vr, length, pos + 8

    def dataset(self, pos: int, end: int | None) -> tuple[dict, int]:
        """Elements from ``pos`` to ``end`` (or to an item delimiter when ``end`` is None)."""
        out: dict = {}
        stop = len(self.buf) if end is None else end
        while pos < stop:
            tag, vr, length, pos = self.header(pos)
            if tag == _ITEM_END:
                return out, pos
            if tag == _PIXEL_DATA and length == _UNDEFINED:
                out[tag], pos = self.fragments(pos)
            elif vr == b"SQ" or (length == _UNDEFINED and vr in (b"UN", b"")):
                out[tag], pos = self.sequence(pos, length)
            else:
                if length == _UNDEFINED or pos + length > len(self.buf):
                    raise self._fail(f"element {tag[0]:04X},{tag[1]:04X} runs past the end")
                out[tag] = (vr, pos, length)
                pos += length
        return out, pos

    def sequence(self, pos: int, length: int) -> tuple[list[dict], int]:
        items: list[dict] = []
        stop = None if length == _UNDEFINED else pos + length
        while stop is None or pos < stop:
            tag, _, item_len, pos = self.header(pos)
            if tag == _SEQ_END:
                break
            if tag != _ITEM:
                raise self._fail(f"expected a sequence item, found {tag[0]:04X},{tag[1]:04X}")
            item, pos = self.dataset(pos, None if item_len == _UNDEFINED else pos + item_len)
            items.append(item)
        return items, pos

    def fragments(self, pos: int) -> tuple[list[tuple[int, int]], int]:
        """(offset, length) of each encapsulated fragment; the first (offset table) is dropped."""
        frags: list[tuple[int, int]] = []
        while True:
            tag, _, length, pos = self.header(pos)
            if tag == _SEQ_END:
                break
            if tag != _ITEM or pos + length > len(self.buf):
                raise self._fail("broken encapsulated pixel data")
            frags.append((pos, length))
            pos += length
        return frags[1:], pos


class DicomFrames:
    """One tiled DICOM WSI instance read frame by frame (the backend protocol of ``reader``)."""

    def __init__(self, path: str | Path, *, cache_frames: int = 64) -> None:
        self.path = Path(path)
        try:
            buf = self.path.read_bytes()
        except OSError as exc:
            raise CosynthError(f"cannot read DICOM file {self.path}: {exc}") from None
        if buf[128:132] != b"DICM":
            raise CosynthError(f"{self.path} is not a DICOM Part 10 file (no 'DICM' magic)")
        self._buf = buf
        # Whatever a damaged header does to the parser (short reads, non-numeric values) is
        # reported as a corrupt file naming the path, never as a traceback.
        try:
            parser = _Parser(buf, str(self.path))
            ds, _ = parser.dataset(132, None)
            syntax = self._text(ds, (0x0002, 0x0010))
            if syntax not in _ENCAPSULATED and syntax != _EXPLICIT_LE:
                raise CosynthError(
                    f"DICOM file {self.path}: transfer syntax {syntax!r} is not supported "
                    f"(supported: explicit VR little endian, JPEG baseline, JPEG 2000)"
                )
            self._codec = _ENCAPSULATED.get(syntax, "raw")
            self.tile_h = self._int(ds, (0x0028, 0x0010))
            self.tile_w = self._int(ds, (0x0028, 0x0011))
            total_w = self._int(ds, (0x0048, 0x0006), self.tile_w)
            total_h = self._int(ds, (0x0048, 0x0007), self.tile_h)
            self.n_frames = self._int(ds, (0x0028, 0x0008), 1)
            self.samples = self._int(ds, (0x0028, 0x0002), 3)
            if min(self.tile_w, self.tile_h, total_w, total_h, self.n_frames, self.samples) <= 0:
                raise CosynthError(f"DICOM file {self.path}: non-positive image size, frame count or samples per pixel")
            self.tiles_across = -(-total_w // self.tile_w)
            if _PIXEL_DATA not in ds:
                raise CosynthError(f"DICOM file {self.path} has no pixel data")
            pixel = ds[_PIXEL_DATA]
            if self._codec == "raw":
                _, off, length = pixel
                frame_bytes = self.tile_w * self.tile_h * self.samples
                if length < frame_bytes * self.n_frames:
                    raise CosynthError(f"DICOM file {self.path}: pixel data shorter than {self.n_frames} frames")
                self._frames = [(off + k * frame_bytes, frame_bytes) for k in range(self.n_frames)]
            else:
                self._frames = pixel
            if len(self._frames) < self.n_frames:
                raise CosynthError(f"DICOM file {self.path}: {len(self._frames)} frames stored, {self.n_frames} declared")
            self.level_dimensions = [(int(total_w), int(total_h))]
            self.level_downsamples = [1.0]
            self.properties = {"openslide.vendor": "dicom", "dicom.fallback-reader": "wsi_cosynth"}
            spacing = self._pixel_spacing_mm(ds)
            if spacing is not None:
                self.properties["openslide.mpp-x"] = str(spacing * 1000.0)
        except (struct.error, ValueError, IndexError, ZeroDivisionError, UnicodeDecodeError) as exc:
            raise CosynthError(f"DICOM file {self.path} is corrupt or truncated ({type(exc).__name__}: {exc})") from None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = cache_frames

    # ------------------------------------------------------------------ metadata helpers
    def _text(self, ds: dict, tag: tuple[int, int]) -> str:
        if tag not in ds or not isinstance(ds[tag], tuple):
            return ""
        _, off, length = ds[tag]
        return self._buf[off:off + length].decode("ascii", "replace").strip("\x00 ")

    def _int(self, ds: dict, tag: tuple[int, int], default: int | None = None) -> int:
        if tag not in ds:
            if default is None:
                raise CosynthError(f"DICOM file {self.path} lacks element {tag[0]:04X},{tag[1]:04X}")
            return default
        vr, off, length = ds[tag]
        if vr == b"US":
            return struct.unpack_from("<H", self._buf, off)[0]
        if vr == b"UL":
            return struct.unpack_from("<I", self._buf, off)[0]
        return int(self._text(ds, tag) or (default or 0))

    def _pixel_spacing_mm(self, ds: dict) -> float | None:
        # SharedFunctionalGroupsSequence > PixelMeasuresSequence > PixelSpacing (row\col, mm).
        for shared in ds.get((0x5200, 0x9229), []):
            for measures in shared.get((0x0028, 0x9110), []):
                text = self._text(measures, (0x0028, 0x0030))
                if text:
                    try:
                        return float(text.split("\\")[-1])
                    except ValueError:
                        return None
        return None

    # ------------------------------------------------------------------ pixels
    def _frame(self, k: int) -> np.ndarray:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        off, length = self._frames[k]
        data = self._buf[off:off + length]
        try:
            if self._codec == "raw":
                arr = np.frombuffer(data, dtype=np.uint8).reshape(self.tile_h, self.tile_w, self.samples)
            else:
                from PIL import Image

                with Image.open(io.BytesIO(data)) as im:
                    arr = np.asarray(im.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a corrupt file
            raise CosynthError(f"DICOM file {self.path}: frame {k} cannot be decoded ({exc})") from None
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        arr = arr[: self.tile_h, : self.tile_w, :3]
        self._cache[k] = arr
        if len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)
        return arr

    def read_window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB of the window at (x, y) on ``level`` (0 only); white outside."""
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        total_w, total_h = self.level_dimensions[0]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, total_w), min(y + h, total_h)
        if x0 >= x1 or y0 >= y1:
            return out
        for ty in range(y0 // self.tile_h, (y1 - 1) // self.tile_h + 1):
            for tx in range(x0 // self.tile_w, (x1 - 1) // self.tile_w + 1):
                k = ty * self.tiles_across + tx
                if k >= self.n_frames:
                    continue
                tile = self._frame(k)
                # Overlap of this frame with the window, in slide pixels.
                sx0, sy0 = max(x0, tx * self.tile_w), max(y0, ty * self.tile_h)
                sx1 = min(x1, tx * self.tile_w + tile.shape[1])
                sy1 = min(y1, ty * self.tile_h + tile.shape[0])
                if sx0 >= sx1 or sy0 >= sy1:
                    continue
                out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = tile[
                    sy0 - ty * self.tile_h:sy1 - ty * self.tile_h, sx0 - tx * self.tile_w:sx1 - tx * self.tile_w
                ]
        return out

    def close(self) -> None:
        self._cache.clear()
