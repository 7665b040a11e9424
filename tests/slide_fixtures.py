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

from wsi_cosynth.slide.svs_writer import block_mean, write_aperio_svs  # noqa: F401 (re-exported)

H_E_PINK = np.array([236, 170, 200], dtype=np.float64)
H_E_PURPLE = np.array([120, 60, 150], dtype=np.float64)


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


def write_svs(path: str | Path, image: np.ndarray, *, mpp: float | None = 0.25, **options) -> Path:
    """The package's Aperio writer with the fixtures' defaults (levels 1 and 4, JPEG Q95)."""
    return write_aperio_svs(path, image, mpp=mpp, **options)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
