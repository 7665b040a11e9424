"""Plain images as single-level slides: TIFF (strip or tiled, OME-TIFF, BigTIFF), PNG, JPEG.

OpenSlide opens tiled pyramidal TIFFs but rejects a strip TIFF (a MoNuSeg image) and PNG/JPEG
regions (CryoNuSeg, TNBC, Kumar, most lab exports). This backend reads them behind the same
:class:`~wsi_cosynth.slide.reader.LevelSource` protocol, like TIAToolbox's virtual slide:

- TIFF is read by region: only the strips or tiles a window touches are read from the file and
  decoded (tifffile's per-segment decoder, any compression tifffile/imagecodecs know);
  uncompressed strips are read row by row, never whole. OME-TIFF pyramid levels (sub-IFDs)
  become pyramid levels.
- PNG and JPEG cannot be decoded by region; they are decoded once, whole, up to
  :data:`MAX_DECODED_PIXELS` pixels (a larger one is an error that says to convert it).
- Resolution: TIFF ``XResolution``/``ResolutionUnit``, OME ``PhysicalSizeX``, PNG ``pHYs`` or JPEG
  JFIF density, each only when plausible for a scan (see ``reader._MPP_RANGE``); 72 dpi and the
  like are defaults, not measurements. Otherwise the caller must give ``--slide-mpp``.

Windows are ``(h, w, 3)`` uint8 RGB; outside the image is white. Files are checked when opened
(image data past the end of the file is a truncated file), so a damaged file fails at once.
"""

from __future__ import annotations

import math
import re
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import CosynthError

# Largest PNG/JPEG decoded whole (RGB: 3 bytes per pixel, ~400 MB).
MAX_DECODED_PIXELS = 1 << 27
# Largest compressed TIFF strip or tile decoded for one window (bytes decoded).
MAX_SEGMENT_BYTES = 1 << 28
# Decoded strips/tiles kept per level (bytes): a row of tiles (or of thumbnail blocks, ~5800
# level pixels high) reads the same full-width strips once per tile, so the strips of such a
# row stay decoded when they fit in SEGMENT_CACHE_MAX_BYTES; an image whose decoded size fits
# in it stays decoded whole once read (tissue detection then tiling decode it once, not twice).
SEGMENT_CACHE_BYTES = 1 << 27
SEGMENT_CACHE_MAX_BYTES = 3 << 27
_CACHE_ROWS = 6000
_MPP_RANGE = (0.01, 50.0)
_UM_PER_UNIT = {"nm": 1e-3, "um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
PLAIN_KINDS = ("tiff", "png", "jpeg")


def plain_kind(path: str | Path) -> str | None:
    """"tiff", "png" or "jpeg" from the file's magic bytes, or None for anything else."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def _plausible(mpp: float | None) -> float | None:
    if mpp is None or not math.isfinite(mpp) or not _MPP_RANGE[0] <= mpp <= _MPP_RANGE[1]:
        return None
    return float(mpp)


def ome_mpp(description: str | None) -> float | None:
    """Microns per pixel from OME-XML ``Pixels PhysicalSizeX`` (+ ``PhysicalSizeXUnit``), or None."""
    if not description or "<OME" not in description:
        return None
    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", description)
    if pixels is None:
        return None
    size = re.search(r'PhysicalSizeX="([^"]+)"', pixels.group(0))
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', pixels.group(0))
    try:
        value = float(size.group(1)) if size else None
    except ValueError:
        return None
    if value is None:
        return None
    factor = _UM_PER_UNIT.get(unit.group(1) if unit else "um")
    return _plausible(value * factor) if factor is not None else None


def tiff_tag_mpp(x_resolution: tuple[int, int] | float | None, unit: int | None) -> float | None:
    """Microns per pixel from TIFF XResolution (pixels per unit) and ResolutionUnit (2 inch, 3 cm)."""
    if x_resolution is None:
        return None
    if isinstance(x_resolution, tuple):
        num, den = x_resolution
        if not num or not den:
            return None
        res = num / den
    else:
        res = float(x_resolution)
    per_unit_um = {2: 25400.0, 3: 1e4}.get(int(unit or 2))
    if per_unit_um is None or res <= 0:
        return None
    return _plausible(per_unit_um / res)


def _mpp_properties(mpp: float | None, found: str) -> dict[str, str]:
    props = {"openslide.vendor": "plain", "plain.resolution-source": found}
    if mpp is not None:
        props["openslide.mpp-x"] = props["openslide.mpp-y"] = repr(float(mpp))
    return props


class PlainImageSource:
    """A PNG or JPEG as a one-level slide, decoded once (at most :data:`MAX_DECODED_PIXELS`)."""

    def __init__(self, path: Path) -> None:
        from PIL import Image

        self.path = path
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    w, h = im.size
                    if w * h > MAX_DECODED_PIXELS:
                        raise CosynthError(
                            f"slide {path} is a {w}x{h} {im.format} image, too large to decode whole (limit "
                            f"{MAX_DECODED_PIXELS:,} pixels); save it as a tiled TIFF (e.g. vips tiffsave --tile) and open that"
                        )
                    dpi = im.info.get("dpi")
                    rgb = _pil_rgb(im)
        except CosynthError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a damaged file
            raise CosynthError(f"slide {path} cannot be decoded as an image ({_short(exc)}); is it truncated?") from None
        self._pixels = rgb
        self.level_dimensions = [(int(w), int(h))]
        self.level_downsamples = [1.0]
        mpp = None
        if dpi and dpi[0]:
            mpp = _plausible(25400.0 / float(dpi[0]))
        if mpp is not None:
            found = "image density"
        elif dpi and dpi[0]:
            found = f"its image density {float(dpi[0]):g} dpi is not a scan resolution"
        else:
            found = f"its {self.path.suffix or 'image'} header has no pixel density"
        self.properties = _mpp_properties(mpp, found)

    def read_window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return _window(self._pixels, x, y, w, h)

    def close(self) -> None:
        self._pixels = np.zeros((0, 0, 3), dtype=np.uint8)


def _pil_rgb(im) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PIL image; alpha composited onto white, 16-bit scaled to 8."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(arr / 257.0, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        from .reader import _rgba_on_white

        return _rgba_on_white(np.asarray(im.convert("RGBA")))
    return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def _window(pixels: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """(h, w, 3) window of an (H, W, 3) array at (x, y); white outside it."""
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    H, W = pixels.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 < x1 and y0 < y1:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = pixels[y0:y1, x0:x1]
    return out


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class _TiffLevel:
    """One TIFF page read by window: the strips/tiles a window touches, decoded one by one."""

    def __init__(self, tif, page, path: Path, file_size: int, lock: threading.Lock) -> None:
        self.tif, self.page, self.path, self.lock = tif, page, path, lock
        self.width, self.height = int(page.imagewidth), int(page.imagelength)
        self.samples = int(page.samplesperpixel)
        self.separate = int(page.planarconfig) == 2
        if page.is_tiled:
            self.seg_h, self.seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.seg_h, self.seg_w = min(int(page.rowsperstrip or self.height), self.height), self.width
        self.across = math.ceil(self.width / self.seg_w)
        self.down = math.ceil(self.height / self.seg_h)
        self.offsets = [int(v) for v in page.dataoffsets]
        self.counts = [int(v) for v in page.databytecounts]
        planes = self.samples if self.separate else 1
        if len(self.offsets) < self.across * self.down * planes:
            raise CosynthError(
                f"slide {path} is damaged: its TIFF image of {self.width}x{self.height} px needs "
                f"{self.across * self.down * planes} strips/tiles but lists {len(self.offsets)}"
            )
        end = max((o + c for o, c in zip(self.offsets, self.counts) if c), default=0)
        if end > file_size:
            raise CosynthError(
                f"slide {path} is truncated: its {self.width}x{self.height} px image data ends at byte {end:,} "
                f"but the file has {file_size:,} bytes"
            )
        self.dtype = np.dtype(page.dtype) if page.dtype is not None else None
        if self.dtype is None or self.dtype.kind not in "uf":
            raise CosynthError(f"slide {path}: TIFF sample type {page.dtype} is not supported (8/16-bit RGB or grey)")
        self.raw = int(page.compression) == 1 and not self.separate and not page.is_tiled and page.fillorder == 1
        self.itemsize = self.dtype.itemsize
        seg_bytes = self.seg_h * self.seg_w * self.samples * self.itemsize
        if not self.raw and seg_bytes > MAX_SEGMENT_BYTES:
            raise CosynthError(
                f"slide {path} stores its {self.width}x{self.height} px image in compressed "
                f"{'tiles' if page.is_tiled else 'strips'} of {self.seg_w}x{self.seg_h} px ({seg_bytes / 2**30:.1f} GiB "
                f"each decoded), too large to read by region; re-save it tiled (e.g. vips tiffsave --tile)"
            )
        self._cache: OrderedDict[int, np.ndarray | None] = OrderedDict()
        self._cache_bytes = 0
        row_bytes = self.width * self.samples * self.itemsize
        whole = self.height * row_bytes
        self._cache_limit = (whole if whole <= SEGMENT_CACHE_MAX_BYTES
                             else int(np.clip(_CACHE_ROWS * row_bytes, SEGMENT_CACHE_BYTES, SEGMENT_CACHE_MAX_BYTES)))
        self.colormap = page.colormap if int(page.photometric) == 3 else None
        self.photometric = int(page.photometric)
        self.extrasamples = tuple(int(v) for v in (page.extrasamples or ()))

    def _read(self, offset: int, count: int) -> bytes:
        with self.lock:
            fh = self.tif.filehandle
            fh.seek(offset)
            return fh.read(count)

    def _segment(self, index: int) -> np.ndarray | None:
        """Decoded segment ``index`` as (rows, cols, samples_in_segment), or None if absent (cached)."""
        with self.lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        seg = self._decode(index)
        with self.lock:
            if index not in self._cache:
                self._cache[index] = seg
                self._cache_bytes += 0 if seg is None else seg.nbytes
                while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= 0 if old is None else old.nbytes
        return seg

    def _decode(self, index: int) -> np.ndarray | None:
        if not self.counts[index]:
            return None
        data = self._read(self.offsets[index], self.counts[index])
        try:
            seg, _, _ = self.page.decode(data, index, jpegtables=self.page.jpegtables)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a damaged file
            raise CosynthError(f"slide {self.path}: TIFF segment {index} cannot be decoded ({_short(exc)})") from None
        if seg is None:
            return None
        seg = np.asarray(seg)
        return seg.reshape(seg.shape[-3], seg.shape[-2], seg.shape[-1])

    def _raw_rows(self, strip: int, r0: int, r1: int) -> np.ndarray:
        """Rows [r0, r1) of uncompressed strip ``strip`` read straight from the file."""
        row_bytes = self.width * self.samples * self.itemsize
        data = self._read(self.offsets[strip] + r0 * row_bytes, (r1 - r0) * row_bytes)
        if len(data) < (r1 - r0) * row_bytes:
            raise CosynthError(f"slide {self.path} is truncated inside strip {strip}")
        arr = np.frombuffer(data, dtype=self.dtype.newbyteorder(self.tif.byteorder))
        return arr.reshape(r1 - r0, self.width, self.samples)

    def window(self, x: int, y: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """(h, w, samples) samples of the window in the file's dtype, and (h, w) bool: read from the file."""
        planes = self.samples if self.separate else 1
        out = np.full((h, w, self.samples), np.nan if self.dtype.kind == "f" else 0, dtype=self.dtype)
        filled = np.zeros((h, w), dtype=bool)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, self.width), min(y + h, self.height)
        if x0 >= x1 or y0 >= y1:
            return out, filled
        for r in range(y0 // self.seg_h, (y1 - 1) // self.seg_h + 1):
            for c in range(x0 // self.seg_w, (x1 - 1) // self.seg_w + 1):
                sy0, sx0 = r * self.seg_h, c * self.seg_w
                ry0, ry1 = max(y0, sy0), min(y1, sy0 + self.seg_h)
                rx0, rx1 = max(x0, sx0), min(x1, sx0 + self.seg_w)
                for plane in range(planes):
                    index = plane * self.across * self.down + r * self.across + c
                    if self.raw:
                        seg = self._raw_rows(index, ry0 - sy0, ry1 - sy0)
                        part = seg[:, rx0:rx1]
                    else:
                        seg = self._segment(index)
                        if seg is None:
                            continue
                        part = seg[ry0 - sy0:ry1 - sy0, rx0 - sx0:rx1 - sx0]
                    target = out[ry0 - y:ry1 - y, rx0 - x:rx1 - x]
                    if self.separate:
                        target[..., plane] = part[..., 0]
                    else:
                        target[...] = part[..., : self.samples]
                    filled[ry0 - y:ry1 - y, rx0 - x:rx1 - x] = True
        return out, filled

    def rgb(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        samples, filled = self.window(x, y, w, h)
        rgb = _to_rgb8(samples, self.photometric, self.colormap, self.extrasamples, self.path)
        rgb[~filled] = 255
        return rgb


def _to_rgb8(samples: np.ndarray, photometric: int, colormap, extrasamples: tuple[int, ...], path: Path) -> np.ndarray:
    """(h, w, s) TIFF samples -> (h, w, 3) uint8 RGB (grey replicated, palette applied, alpha on white)."""
    s = samples
    if s.dtype == np.uint16:
        s = (s.astype(np.uint32) // 257).astype(np.uint8)
    elif s.dtype.kind == "f":
        s = np.clip(np.nan_to_num(s.astype(np.float64), nan=1.0) * 255.0, 0, 255).astype(np.uint8)
    elif s.dtype != np.uint8:
        raise CosynthError(f"slide {path}: TIFF samples of type {s.dtype} are not supported")
    if photometric == 3 and colormap is not None:  # palette
        cmap = (np.asarray(colormap).T // 257).astype(np.uint8)
        return cmap[samples[..., 0].astype(np.intp)]
    if photometric in (0, 1):  # min-is-white / min-is-black grey
        grey = s[..., 0] if photometric == 1 else 255 - s[..., 0]
        return np.repeat(grey[..., None], 3, axis=2)
    if s.shape[-1] >= 4 and extrasamples and extrasamples[0] in (1, 2):
        from .reader import _rgba_on_white

        return _rgba_on_white(np.ascontiguousarray(s[..., :4]))
    if s.shape[-1] < 3:
        raise CosynthError(f"slide {path}: TIFF with {s.shape[-1]} samples per pixel and photometric {photometric} "
                           "is not an RGB or grey image")
    return np.ascontiguousarray(s[..., :3])


class TiffRegionSource:
    """A TIFF (strip or tiled, BigTIFF, OME-TIFF) read by region; its levels are the OME pyramid's."""

    def __init__(self, path: Path) -> None:
        import tifffile

        self.path = path
        self._lock = threading.Lock()
        try:
            self._tif = tifffile.TiffFile(str(path))
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types on a damaged header
            raise CosynthError(f"slide {path} cannot be read as TIFF ({_short(exc)}); is it truncated or damaged?") from None
        try:
            self._open_levels(path)
        except BaseException:
            self._tif.close()
            raise

    def _open_levels(self, path: Path) -> None:
        tif = self._tif
        size = path.stat().st_size
        try:
            series = tif.series[0]
            pages = [lvl.keyframe for lvl in series.levels] if series.levels else [tif.pages.first]
        except Exception as exc:  # noqa: BLE001
            raise CosynthError(f"slide {path} cannot be read as TIFF ({_short(exc)}); is it truncated or damaged?") from None
        if not pages or pages[0] is None:
            raise CosynthError(f"slide {path} holds no image")
        self._levels = [_TiffLevel(tif, p, path, size, self._lock) for p in pages]
        w0, h0 = self._levels[0].width, self._levels[0].height
        keep = [lv for lv in self._levels if lv.width <= w0 and lv.height <= h0]
        self._levels = sorted(keep, key=lambda lv: -lv.width)
        self.level_dimensions = [(lv.width, lv.height) for lv in self._levels]
        self.level_downsamples = [w0 / lv.width for lv in self._levels]
        page = pages[0]
        mpp, found = None, "no TIFF XResolution or OME PhysicalSizeX"
        ome = ome_mpp(tif.ome_metadata) if tif.is_ome else None
        if ome is not None:
            mpp, found = ome, "OME PhysicalSizeX"
        else:
            xres = page.tags.get("XResolution")
            unit = page.tags.get("ResolutionUnit")
            if xres is not None:
                mpp = tiff_tag_mpp(xres.value, int(unit.value) if unit is not None else None)
                found = "TIFF XResolution" if mpp else f"its TIFF XResolution {_res_text(xres.value, unit)} is not a scan resolution"
        self.properties = _mpp_properties(mpp, found)
        desc = page.description
        if desc:
            self.properties["tiff.ImageDescription"] = desc[:4096]

    def read_window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self._levels[level].rgb(x, y, w, h)

    def close(self) -> None:
        self._tif.close()


def _res_text(value, unit) -> str:
    if isinstance(value, tuple) and value[1]:
        value = value[0] / value[1]
    names = {1: "no unit", 2: "inch", 3: "cm"}
    u = names.get(int(unit.value), "?") if unit is not None else "inch"
    return f"{float(value):g} px per {u}"


def open_plain(path: Path, kind: str):
    """The backend source for a plain image of ``kind`` (see :func:`plain_kind`)."""
    if kind == "tiff":
        return TiffRegionSource(path)
    if kind in ("png", "jpeg"):
        return PlainImageSource(path)
    raise CosynthError(f"slide {path}: {kind!r} is not a plain image kind (valid: {', '.join(PLAIN_KINDS)})")


def resolution_note(properties: dict[str, str]) -> str | None:
    """Why a plain image has no usable resolution, for the reader's error message (None: not plain)."""
    return properties.get("plain.resolution-source") if properties.get("openslide.vendor") == "plain" else None
