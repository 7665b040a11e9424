"""Write an RGB image as an Aperio-style pyramidal .svs that OpenSlide opens.

Used for the demo slide and for test fixtures. Layout (what OpenSlide's aperio driver expects):
page 0 = full-resolution tiled level whose ImageDescription starts with "Aperio" and carries
``|MPP = ...|AppMag = ...``; then one tiled page per downsampled level; each level is a separate
TIFF page (not a SubIFD).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.transform import resize

from ..atomic import atomic_path


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[0] // factor, image.shape[1] // factor
    small = resize(image, (h, w), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def write_aperio_svs(
    path: str | Path,
    image_rgb: np.ndarray,
    *,
    mpp: float,
    downsamples: tuple[int, ...] = (1, 4),
    tile: int = 256,
    compression: str | None = "jpeg",
    app_mag: float | None = None,
) -> Path:
    """Write ``image_rgb`` ((H, W, 3) uint8) as a multi-level Aperio .svs.

    Parameters
    ----------
    mpp : microns per pixel of level 0.
    downsamples : per-level integer downsample factors, starting with 1.
    tile : TIFF tile edge (multiple of 16).
    compression : "jpeg" (quality 95, lossy like real scanners) or None (lossless).
    app_mag : objective magnification written as AppMag (default 10 / mpp, e.g. 40 at 0.25).
    """
    import tifffile

    if downsamples[0] != 1:
        raise ValueError(f"downsamples must start with 1, got {downsamples}")
    image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    h, w = image.shape[:2]
    mag = app_mag if app_mag is not None else round(10.0 / mpp, 2)
    description = (
        f"Aperio Image Library v12.0.0\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) "
        f"JPEG/RGB Q=95|AppMag = {mag:g}|MPP = {mpp:.6f}"
    )
    kwargs = {"compression": "jpeg", "compressionargs": {"level": 95}} if compression == "jpeg" else {}
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=False) as tif:
            for i, factor in enumerate(downsamples):
                level = image if factor == 1 else _downsample(image, factor)
                tif.write(
                    level,
                    tile=(tile, tile),
                    photometric="rgb",
                    description=description if i == 0 else f"Aperio Image Library v12.0.0\n{level.shape[1]}x{level.shape[0]}",
                    metadata=None,
                    **kwargs,
                )
    return Path(path)
