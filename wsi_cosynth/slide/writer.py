"""Slide files this package WRITES: the demo's Aperio .svs and synthetic pyramidal TIFFs.

Both are single-file tiled TIFF pyramids that OpenSlide opens: level 0 in the first page, each
coarser level in a following page (not a SubIFD), level k the block mean (images) or the
top-left sample (label maps) of level k-1 over 2 x 2 blocks (the .svs: of level 0 over its
given factors).

- :func:`write_aperio_svs`: an in-memory RGB image as an Aperio .svs (``ImageDescription``
  "Aperio Image Library ... |MPP = ...").
- :func:`write_pyramid_tiff`: an RGB or multi-channel map of any size, read tile by tile from an
  array (a ``numpy.memmap`` keeps a slide-sized map on disk), with the mpp in the TIFF resolution
  tags (pixels per centimetre; OpenSlide reports it as ``openslide.mpp-x``) and a description.
  Coarser levels are built in row strips, on disk beside the output when they are large.
- :func:`synthetic_description` / :func:`is_synthetic_description`: the ``ImageDescription``
  that marks a slide's pixels as synthetic, and its test.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from ..atomic import atomic_path

SYNTHETIC_TAG = "wsi-cosynth synthetic slide"
Downsample = Literal["mean", "nearest"]
# A coarser level larger than this many bytes is built in a memory-mapped file, not in memory.
_IN_MEMORY_LEVEL_BYTES = 64 << 20
_HALVE_BLOCK = 256  # output px a side of one block of a level being halved (its float copy: 6 MiB)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, C) uint8 -> (H // f, W // f, C) uint8 area average over f x f blocks."""
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    blocks = image[:h, :w].astype(np.float64).reshape(h // factor, factor, w // factor, factor, -1)
    return np.clip(np.round(blocks.mean(axis=(1, 3))), 0, 255).astype(np.uint8)


def write_aperio_svs(
    path: str | Path,
    image_rgb: np.ndarray,
    *,
    mpp: float | None,
    downsamples: tuple[int, ...] = (1, 4),
    tile: int = 256,
    compression: str | None = "jpeg",
    quality: int = 95,
    app_mag: float = 40.0,
) -> Path:
    """Write ``image_rgb`` ((H, W, 3) uint8) as a multi-level Aperio .svs, atomically.

    Parameters
    ----------
    mpp : microns per pixel of level 0, written as ``MPP``; None writes no resolution at all
        (a slide that needs ``--slide-mpp``).
    downsamples : per-level integer downsample factors, starting with 1.
    tile : TIFF tile edge (multiple of 16).
    compression : "jpeg" (lossy like real scanners, ``quality``) or None (uncompressed).
    app_mag : objective magnification written as AppMag.
    """
    import tifffile

    if not downsamples or downsamples[0] != 1:
        raise ValueError(f"downsamples must start with 1, got {downsamples}")
    image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    h, w = image.shape[:2]
    fields = f"|AppMag = {app_mag:g}" + (f"|MPP = {mpp}" if mpp is not None else "")
    kwargs = {"compression": "jpeg", "compressionargs": {"level": quality}} if compression == "jpeg" else {}
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp) as tif:
            for i, factor in enumerate(downsamples):
                level = image if factor == 1 else block_mean(image, factor)
                desc = (f"Aperio Image Library v12.0.15\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q={quality}{fields}"
                        if i == 0 else f"Aperio Image Library v12.0.15\n{w}x{h} -> {level.shape[1]}x{level.shape[0]}")
                tif.write(level, tile=(tile, tile), photometric="rgb", description=desc, metadata=None, **kwargs)
    return Path(path)


def synthetic_description(metadata: dict) -> str:
    """The level-0 ``ImageDescription`` of a synthetic slide: a marker line, then ``metadata`` as JSON."""
    return SYNTHETIC_TAG + "\n" + json.dumps({"synthetic": True, **metadata}, sort_keys=True)


def is_synthetic_description(description: str | None) -> bool:
    """True when an ``ImageDescription`` (OpenSlide's ``tiff.ImageDescription``) marks synthetic pixels."""
    return bool(description) and str(description).startswith(SYNTHETIC_TAG)


def _tiles(level: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """The level's tiles in row-major order, edge tiles padded with zeros to ``tile`` x ``tile``."""
    h, w = level.shape[:2]
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            block = np.asarray(level[y:y + tile, x:x + tile])
            if block.shape[:2] != (tile, tile):
                padded = np.zeros((tile, tile, *level.shape[2:]), dtype=level.dtype)
                padded[:block.shape[0], :block.shape[1]] = block
                block = padded
            yield block


def _halve(src: np.ndarray, mode: Downsample, scratch: Path) -> np.ndarray:
    """Level k+1 of level k: 2 x 2 block mean (``mean``) or top-left sample (``nearest``), built in
    blocks of _HALVE_BLOCK x _HALVE_BLOCK output pixels (memory bounded whatever the slide's width);
    in a memory-mapped file under ``scratch`` when large."""
    h, w = src.shape[0] // 2, src.shape[1] // 2
    shape = (h, w, *src.shape[2:])
    nbytes = int(np.prod(shape)) * src.dtype.itemsize
    if nbytes > _IN_MEMORY_LEVEL_BYTES:
        fd, name = tempfile.mkstemp(prefix="level.", suffix=".raw", dir=scratch)
        with open(fd, "wb") as fh:
            fh.truncate(nbytes)
        dst = np.memmap(name, dtype=src.dtype, mode="r+", shape=shape)
    else:
        dst = np.empty(shape, dtype=src.dtype)
    for y in range(0, h, _HALVE_BLOCK):
        y1 = min(h, y + _HALVE_BLOCK)
        for x in range(0, w, _HALVE_BLOCK):
            x1 = min(w, x + _HALVE_BLOCK)
            block = np.asarray(src[2 * y:2 * y1, 2 * x:2 * x1])
            if mode == "mean":
                out = block_mean(block if block.ndim == 3 else block[..., None], 2)
                dst[y:y1, x:x1] = out if block.ndim == 3 else out[..., 0]
            else:
                dst[y:y1, x:x1] = block[::2, ::2]
    return dst


def write_pyramid_tiff(
    path: str | Path,
    level0: np.ndarray,
    *,
    mpp: float,
    description: str,
    tile: int = 256,
    compression: Literal["jpeg", "deflate"] = "jpeg",
    quality: int = 90,
    downsample: Downsample = "mean",
) -> Path:
    """Write a tiled pyramidal TIFF of ``level0`` atomically; return its path.

    Parameters
    ----------
    level0 : (H, W, 3) uint8 RGB (``compression="jpeg"``) or (H, W, C) unsigned integers
        (``compression="deflate"``); any array that slices lazily (a ``numpy.memmap``) works.
    mpp : microns per level-0 pixel: the resolution tags hold 10^4 / mpp pixels per centimetre
        (each level its own).
    description : level 0's ``ImageDescription``.
    tile : TIFF tile edge, a multiple of 16.
    downsample : ``mean`` for images, ``nearest`` for label and instance maps (ids stay ids).

    Levels halve until the coarsest fits in one tile.
    """
    import tifffile

    if level0.ndim != 3:
        raise ValueError(f"level0 must be (H, W, C), got shape {level0.shape}")
    if compression == "jpeg" and (level0.shape[2] != 3 or level0.dtype != np.uint8):
        raise ValueError(f"JPEG tiles need (H, W, 3) uint8 RGB, got {level0.shape} {level0.dtype}")
    rgb = level0.shape[2] == 3 and level0.dtype == np.uint8
    options: dict = {"compression": "jpeg", "compressionargs": {"level": quality}} if compression == "jpeg" else \
        {"compression": "zlib", "predictor": False}
    final = Path(path)
    with atomic_path(final) as tmp, tempfile.TemporaryDirectory(prefix=".pyramid.", dir=final.parent) as scratch:
        with tifffile.TiffWriter(tmp, bigtiff=level0.nbytes > (3 << 30)) as tif:
            level, factor = level0, 1
            while True:
                h, w = level.shape[:2]
                per_cm = 1e4 / (mpp * factor)
                tif.write(_tiles(level, tile), shape=level.shape, dtype=level.dtype, tile=(tile, tile),
                          photometric="rgb" if rgb else "minisblack", planarconfig="contig",
                          resolution=(per_cm, per_cm), resolutionunit="CENTIMETER",
                          subfiletype=0 if factor == 1 else 1, description=description if factor == 1 else None,
                          metadata=None, maxworkers=1, **options)
                if max(h, w) <= tile or min(h, w) < 2:
                    break
                level, factor = _halve(level, downsample, Path(scratch)), factor * 2
    return final
