"""Write an RGB image as an Aperio-style pyramidal .svs that OpenSlide opens.

Used for the demo slide and for test fixtures. Layout (what OpenSlide's aperio driver expects):
page 0 = full-resolution tiled level whose ImageDescription starts with "Aperio Image Library"
and carries ``|AppMag = ...|MPP = ...``; then one tiled page per downsampled level; each level is
a separate TIFF page (not a SubIFD). Level k is the area average (block mean) of level 0 over
``downsamples[k]`` x ``downsamples[k]`` blocks, so a reference at any stored resolution is a
block mean of level 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H // f, W // f, 3) uint8 area average over f x f blocks."""
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
