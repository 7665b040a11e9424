"""Generated whole-slide fixtures: multi-level Aperio-style .svs written with tifffile.

Each pyramid level is its own tiled TIFF page (OpenSlide's aperio driver reads every tiled page
as a level); page 0's ImageDescription starts with "Aperio Image Library" and carries
``|MPP = ...`` unless ``mpp=None``. Level k is the area average (block mean) of level 0 over
``downsamples[k]`` x ``downsamples[k]`` blocks, so a reference at any of those resolutions is a
block mean of level 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

H_E_PINK = np.array([236, 170, 200], dtype=np.float64)
H_E_PURPLE = np.array([120, 60, 150], dtype=np.float64)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H // f, W // f, 3) uint8 area average over f x f blocks."""
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    blocks = image[:h, :w].astype(np.float64).reshape(h // factor, factor, w // factor, factor, -1)
    return np.clip(np.round(blocks.mean(axis=(1, 3))), 0, 255).astype(np.uint8)


def synthetic_he(height: int, width: int, *, seed: int = 0, tissue_fraction: float = 0.7,
                 smooth_px: float = 3.0) -> np.ndarray:
    """(H, W, 3) uint8 smooth H&E-like image: tissue on the right ``tissue_fraction``, glass left."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((height, width)), smooth_px)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-9)
    rgb = H_E_PINK[None, None] * (1 - field[..., None]) + H_E_PURPLE[None, None] * field[..., None]
    glass = int(round(width * (1.0 - tissue_fraction)))
    rgb[:, :glass] = 245.0
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def write_svs(
    path: str | Path,
    image: np.ndarray,
    *,
    mpp: float | None = 0.25,
    downsamples: tuple[int, ...] = (1, 4),
    tile: int = 256,
    compression: str | None = "jpeg",
    quality: int = 95,
) -> Path:
    """Write ``image`` ((H, W, 3) uint8, level 0) as a pyramidal Aperio-style .svs.

    Parameters
    ----------
    mpp : level-0 microns per pixel written as ``MPP``; None writes no resolution at all.
    downsamples : integer factor per level, starting with 1.
    compression : "jpeg" or None (uncompressed).
    """
    import tifffile

    h, w = image.shape[:2]
    fields = "|AppMag = 40" + (f"|MPP = {mpp}" if mpp is not None else "")
    kwargs = {"compression": "jpeg", "compressionargs": {"level": quality}} if compression == "jpeg" else {}
    with tifffile.TiffWriter(path) as tif:
        for i, f in enumerate(downsamples):
            level = image if f == 1 else block_mean(image, f)
            desc = (f"Aperio Image Library v12.0.15\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q={quality}{fields}"
                    if i == 0 else f"Aperio Image Library v12.0.15\n{w}x{h} -> {level.shape[1]}x{level.shape[0]}")
            tif.write(level, tile=(tile, tile), photometric="rgb", description=desc, metadata=None, **kwargs)
    return Path(path)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
