"""Open a whole-slide image and read regions at a chosen resolution in microns per pixel.

``SlideReader(path).read_region(location_level0=(x, y), size=(w, h), mpp=0.5)`` returns an
(h, w, 3) uint8 RGB array showing the slide area whose top-left corner is level-0 pixel (x, y)
and whose extent is ``size * mpp / slide_mpp`` level-0 pixels. The reader picks the coarsest
pyramid level that is at least as fine as the request and resizes with area averaging when
shrinking (anti-aliased, like TIAToolbox's ``read_rect(..., units="mpp")`` with INTER_AREA),
bicubic when enlarging. Outside the slide is white.

Backends: OpenSlide (every OpenSlide 4 format, DICOM included), a built-in reader for
single-file DICOM that OpenSlide rejects (``dicom.py``), plain images OpenSlide rejects
(strip TIFF, PNG, JPEG; ``plain.py``, read by region) and TIAToolbox when installed and asked for (``backend="tiatoolbox"``).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

import numpy as np

from ..errors import CosynthError, require_file
from .integrity import check_slide_file
from .resolution import best_level, level_window, scale_to_level0, validate_mpp

Backend = Literal["openslide", "tiatoolbox"]
BACKENDS: tuple[str, ...] = ("openslide", "tiatoolbox")

# Plausible scan resolutions; a TIFF resolution tag outside this range is a default (72 dpi)
# rather than a measurement, and is treated as missing.
_MPP_RANGE = (0.01, 50.0)


class LevelSource(Protocol):
    """What a backend provides: pyramid geometry, properties and window reads."""

    level_dimensions: list[tuple[int, int]]
    level_downsamples: list[float]
    properties: dict[str, str]

    def read_window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray: ...

    def close(self) -> None: ...


class _OpenSlideSource:
    """OpenSlide behind the :class:`LevelSource` protocol (RGBA composited onto white)."""

    def __init__(self, path: Path) -> None:
        import openslide

        self._errors = (openslide.OpenSlideError,)
        self.path = path
        self._osr = openslide.OpenSlide(str(path))
        self.level_dimensions = [tuple(map(int, d)) for d in self._osr.level_dimensions]
        self.level_downsamples = [float(d) for d in self._osr.level_downsamples]
        self.properties = dict(self._osr.properties)

    def read_window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        image = self.read_window_image(level, x, y, w, h)
        return image if isinstance(image, np.ndarray) else np.asarray(image)

    def read_window_image(self, level: int, x: int, y: int, w: int, h: int):
        """The window as a PIL RGB image when fully opaque (no numpy round trip), else composited
        onto white as an (h, w, 3) uint8 array."""
        ds = self.level_downsamples[level]
        try:
            rgba = self._osr.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h))
        except self._errors as exc:
            raise CosynthError(f"slide {self.path} cannot be read at level {level} ({exc}); is it truncated?") from None
        if rgba.getchannel("A").getextrema()[0] == 255:
            return rgba.convert("RGB")
        return _rgba_on_white(np.asarray(rgba))

    def close(self) -> None:
        self._osr.close()


def _rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 un-premultiplied RGBA -> (H, W, 3) uint8 RGB over a white background."""
    alpha = rgba[:, :, 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[:, :, :3])
    a = alpha.astype(np.float32) / 255.0
    rgb = rgba[:, :, :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def slide_mpp_from_properties(properties: dict[str, str]) -> float | None:
    """Microns per level-0 pixel from OpenSlide properties, or None when none is recorded.

    Tried in order: ``openslide.mpp-x``, ``aperio.MPP``, TIFF ``XResolution`` with
    ``ResolutionUnit`` (centimeter or inch).
    """
    for key in ("openslide.mpp-x", "aperio.MPP"):
        value = _float(properties.get(key))
        if value is not None and _MPP_RANGE[0] <= value <= _MPP_RANGE[1]:
            return value
    from .plain import ome_mpp

    ome = ome_mpp(properties.get("tiff.ImageDescription"))
    if ome is not None:
        return ome
    res = _float(properties.get("tiff.XResolution"))
    unit = str(properties.get("tiff.ResolutionUnit", "")).lower()
    per_unit_um = {"centimeter": 1e4, "inch": 25400.0}.get(unit)
    if res and per_unit_um:
        value = per_unit_um / res
        if _MPP_RANGE[0] <= value <= _MPP_RANGE[1]:
            return value
    return None


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _open_source(path: Path, backend: str) -> LevelSource:
    if backend == "tiatoolbox":
        from .tiatoolbox_backend import TiaToolboxSource

        return TiaToolboxSource(path)
    import openslide

    from .dicom import DicomFrames, is_dicom
    from .plain import open_plain, plain_kind

    try:
        return _OpenSlideSource(path)
    except (openslide.OpenSlideUnsupportedFormatError, openslide.OpenSlideError) as exc:
        if is_dicom(path):
            # OpenSlide needs ImageType to classify DICOM instances; read such files directly.
            return DicomFrames(path)
        kind = plain_kind(path)
        if kind is not None:
            # Strip TIFF, PNG, JPEG: a single-level (or OME pyramid) slide read by region.
            return open_plain(path, kind)
        raise CosynthError(
            f"slide {path} cannot be opened: not a whole-slide image OpenSlide can read, nor a TIFF, "
            f"PNG or JPEG image, or a damaged one ({exc})"
        ) from None


class SlideReader:
    """A whole-slide image opened for reading at any resolution.

    Parameters
    ----------
    path : the slide file (.svs, .ndpi, .mrxs, .tiff, .dcm, ... anything OpenSlide opens).
    slide_mpp : microns per level-0 pixel; overrides (or supplies) the file's own value.
    backend : "openslide" (default) or "tiatoolbox" (optional dependency).
    direct_jpeg : decode JPEG-tiled TIFF levels directly at reduced DCT scale where a read allows
        it (:mod:`.jpeg_tiles`; same pixels within JPEG noise, PSNR >= 40 dB against OpenSlide +
        area resize); False reads every region through the backend.

    Raises
    ------
    CosynthError
        Missing or unreadable file; no resolution in the file and no ``slide_mpp``.
    """

    def __init__(self, path: str | Path, *, slide_mpp: float | None = None, backend: Backend = "openslide",
                 direct_jpeg: bool = True) -> None:
        if backend not in BACKENDS:
            raise CosynthError(f"unknown slide backend {backend!r} (valid: {', '.join(BACKENDS)})")
        self.path = require_file(path, "slide")
        given_mpp = validate_mpp(slide_mpp, "slide mpp (--slide-mpp)") if slide_mpp is not None else None
        if given_mpp is not None and not _MPP_RANGE[0] <= given_mpp <= _MPP_RANGE[1]:
            raise CosynthError(
                f"slide mpp (--slide-mpp) {slide_mpp!r} for {self.path} is not a scan resolution: expected "
                f"{_MPP_RANGE[0]:g}..{_MPP_RANGE[1]:g} microns per pixel (0.25 ~ 40x, 0.5 ~ 20x), not dpi or mm"
            )
        check_slide_file(self.path)  # a truncated TIFF must not open with its surviving pages
        self._source = _open_source(self.path, backend)  # opened only once the arguments are known good
        self.backend = backend
        if given_mpp is not None:
            self.mpp = given_mpp
        else:
            found = slide_mpp_from_properties(self._source.properties)
            if found is None:
                from .plain import resolution_note

                note = resolution_note(self._source.properties)
                self._source.close()
                raise CosynthError(
                    f"slide {self.path} records no resolution ("
                    + (note if note else "no openslide.mpp-x, aperio.MPP, OME or TIFF resolution")
                    + "): give its microns per pixel with --slide-mpp (slide_mpp=...)"
                )
            self.mpp = found
        self._jpeg = _direct_jpeg_levels(self._source) if direct_jpeg else None
        # OpenSlide handles are thread-safe (and the direct JPEG route reads with pread); other
        # backends (DICOM frame cache, TIAToolbox, plain images) are read one thread at a time.
        self._read_lock = None if isinstance(self._source, _OpenSlideSource) else threading.Lock()

    # ------------------------------------------------------------------ geometry
    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return self._source.level_dimensions[0]

    @property
    def level_downsamples(self) -> list[float]:
        return list(self._source.level_downsamples)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return list(self._source.level_dimensions)

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._source.properties)

    def level_for(self, mpp: float) -> int:
        """The pyramid level a read at ``mpp`` decodes (coarsest level at least as fine)."""
        return best_level(self._source.level_downsamples, scale_to_level0(mpp, self.mpp))

    # ------------------------------------------------------------------ reads
    def read_region(self, location_level0: tuple[float, float], size: tuple[int, int], mpp: float) -> np.ndarray:
        """Read an area of the slide at ``mpp`` microns per pixel.

        Parameters
        ----------
        location_level0 : (x, y) of the top-left corner in level-0 pixels (may be fractional).
        size : (width, height) of the OUTPUT in pixels at ``mpp``.
        mpp : microns per output pixel.

        Returns
        -------
        (height, width, 3) uint8 RGB; areas outside the slide are white (255).
        """
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise CosynthError(f"read size must be positive (width, height), got {size!r}")
        scale = scale_to_level0(mpp, self.mpp)
        level = best_level(self._source.level_downsamples, scale)
        win = level_window(location_level0, (w, h), scale, level, self._source.level_downsamples[level])
        if self._jpeg is not None:
            direct = self._read_direct(win, (w, h))
            if direct is not None:
                return direct
        read_image = getattr(self._source, "read_window_image", self._source.read_window)
        if self._read_lock is None:
            pixels = read_image(level, win.x_level, win.y_level, win.w_level, win.h_level)
        else:
            with self._read_lock:
                pixels = read_image(level, win.x_level, win.y_level, win.w_level, win.h_level)
        return _resample(pixels, win.box, (w, h))

    def _read_direct(self, win, size: tuple[int, int]) -> np.ndarray | None:
        """The window by reduced-scale JPEG decode when it is an exact integer shrink, else None."""
        bx0, by0, bx1, by1 = win.box
        if any(abs(v - round(v)) > 1e-6 for v in win.box) or round(bx0) or round(by0):
            return None
        fx, fy = (bx1 - bx0) / size[0], (by1 - by0) / size[1]
        factor = int(round(fx))
        if abs(fx - factor) > 1e-6 or abs(fy - factor) > 1e-6:
            return None
        return self._jpeg.read(win.level, win.x_level, win.y_level, size[0], size[1], factor)

    def read_thumbnail(self, mpp: float, *, max_level_pixels: int = 1 << 25) -> np.ndarray:
        """The whole slide at ``mpp``, read in blocks of at most ``max_level_pixels`` DECODED pixels.

        Blocks are sized in pixels of the level actually decoded, not of the output: a slide with
        no coarse level (e.g. a single-frame DICOM) is decoded at full resolution, where 512 output
        rows of a 0.25 um/px slide at 8 um/px would be a 16,384-row strip of many gigabytes.

        Returns
        -------
        (H, W, 3) uint8 RGB with W = floor(width0 * slide_mpp / mpp) (at least 1), same for H.
        """
        scale = scale_to_level0(mpp, self.mpp)
        w = max(int(self.dimensions[0] / scale), 1)
        h = max(int(self.dimensions[1] / scale), 1)
        downsample = self._source.level_downsamples[best_level(self._source.level_downsamples, scale)]
        side = max(1, int(math.sqrt(max_level_pixels) * downsample / scale))  # output px per block side
        out = np.empty((h, w, 3), dtype=np.uint8)
        for r0 in range(0, h, side):
            rows = min(side, h - r0)
            for c0 in range(0, w, side):
                cols = min(side, w - c0)
                out[r0:r0 + rows, c0:c0 + cols] = self.read_region((c0 * scale, r0 * scale), (cols, rows), mpp)
        return out

    def close(self) -> None:
        if getattr(self, "_jpeg", None) is not None:
            self._jpeg.close()
        self._source.close()

    def __enter__(self) -> "SlideReader":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"SlideReader({str(self.path)!r}, {w}x{h} px, {self.mpp:g} um/px, {len(self.level_downsamples)} levels)"


def _resample(pixels, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """Resample the float ``box`` of ``pixels`` ((H, W, 3) uint8 array or PIL RGB image) to
    ``size`` (w, h): area average down, bicubic up. Returns (h, w, 3) uint8."""
    from PIL import Image

    w, h = size
    bx0, by0, bx1, by1 = box
    integral = all(abs(v - round(v)) < 1e-6 for v in box)
    if integral and round(bx1 - bx0) == w and round(by1 - by0) == h:
        x0, y0 = int(round(bx0)), int(round(by0))
        if isinstance(pixels, np.ndarray):
            return np.ascontiguousarray(pixels[y0:y0 + h, x0:x0 + w])
        image = pixels if (x0, y0, w, h) == (0, 0, *pixels.size) else pixels.crop((x0, y0, x0 + w, y0 + h))
        return np.array(image)  # writable, as the array path's copy
    shrink = min((bx1 - bx0) / w, (by1 - by0) / h)
    # BOX = exact area averaging when shrinking (anti-aliasing); bicubic when enlarging or
    # shifting by a fraction of a pixel.
    method = Image.Resampling.BOX if shrink > 1.0 + 1e-6 else Image.Resampling.BICUBIC
    image = pixels if not isinstance(pixels, np.ndarray) else Image.fromarray(pixels)
    return np.asarray(image.resize((w, h), resample=method, box=box))


def _direct_jpeg_levels(source: LevelSource):
    """:class:`.jpeg_tiles.JpegTiles` for an OpenSlide TIFF source whose JPEG levels decode to the
    backend's own pixels (checked on one tile per level), else None."""
    if not isinstance(source, _OpenSlideSource):
        return None
    from .jpeg_tiles import JpegTiles

    tiles = JpegTiles.open(source.path, source.level_dimensions)
    if tiles is None:
        return None
    for level, lv in list(tiles.levels.items()):
        # A middle tile at full scale must match the backend: catches colour-space conventions
        # (RGB-coded JPEG, YCbCr flags) that PIL and libtiff might read differently.
        tr, tc = (lv.height // lv.tile_h) // 2, (lv.width // lv.tile_w) // 2
        w, h = min(lv.tile_w, lv.width), min(lv.tile_h, lv.height)
        x, y = min(tc * lv.tile_w, lv.width - w), min(tr * lv.tile_h, lv.height - h)
        x, y = x - x % lv.tile_w, y - y % lv.tile_h
        ours = tiles.read(level, x, y, min(w, lv.width - x), min(h, lv.height - y), 1)
        try:
            theirs = source.read_window(level, x, y, min(w, lv.width - x), min(h, lv.height - y))
        except CosynthError:
            theirs = None
        if ours is None or theirs is None or _psnr(ours, theirs) < 45.0:
            del tiles.levels[level]
    if not tiles.levels:
        tiles.close()
        return None
    return tiles


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def open_slide(path: str | Path, *, slide_mpp: float | None = None, backend: Backend = "openslide",
               direct_jpeg: bool = True) -> SlideReader:
    """Open a slide for reading (see :class:`SlideReader`)."""
    return SlideReader(path, slide_mpp=slide_mpp, backend=backend, direct_jpeg=direct_jpeg)
