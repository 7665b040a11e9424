"""Tissue masks from a low-resolution thumbnail.

Steps: thumbnail at ``mask_mpp`` -> one channel (HSV saturation, or optical density summed over
RGB) -> light Gaussian smoothing -> Otsu threshold, clamped to [min_threshold, max_threshold]
-> remove objects smaller than ``min_object_um2`` -> fill holes smaller than ``max_hole_um2``.
The clamp matters: on a slide that is tissue from edge to edge Otsu would split the tissue
itself in two (bright glass is absent), and on a blank slide it would call noise tissue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import CosynthError

Channel = Literal["saturation", "optical_density"]


@dataclass(frozen=True)
class TissueParams:
    """Tissue-detection settings (all areas in square microns, so they do not depend on mpp).

    ``min_threshold``/``max_threshold`` clamp the Otsu threshold; their defaults are per
    channel: saturation in [0, 1] (glass ~0.01, pale stroma ~0.1), optical density summed over
    RGB (glass ~0.15, tissue > 1).
    """

    channel: Channel = "saturation"
    min_threshold: float | None = None
    max_threshold: float | None = None
    smooth_sigma_px: float = 1.0
    min_object_um2: float = 5_000.0
    max_hole_um2: float = 50_000.0

    def clamp(self) -> tuple[float, float]:
        defaults = {"saturation": (0.05, 0.15), "optical_density": (0.2, 0.6)}
        if self.channel not in defaults:
            raise CosynthError(f"tissue channel must be one of {', '.join(defaults)}, got {self.channel!r}")
        lo, hi = defaults[self.channel]
        return (self.min_threshold if self.min_threshold is not None else lo,
                self.max_threshold if self.max_threshold is not None else hi)


@dataclass(frozen=True)
class TissueMask:
    """A tissue mask and its frame.

    ``mask``: (H, W) bool, True = tissue; mask pixel (row r, col c) covers level-0 pixels
    [c * scale_to_level0, (c + 1) * scale_to_level0) x [r * ..., (r + 1) * ...).
    ``mpp``: microns per mask pixel. ``threshold``: the channel threshold that was applied.
    """

    mask: np.ndarray
    mpp: float
    scale_to_level0: float
    threshold: float
    params: TissueParams = field(default_factory=TissueParams)

    @property
    def fraction(self) -> float:
        """Share of the slide covered by tissue, in [0, 1]."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def tissue_channel(rgb: np.ndarray, channel: Channel = "saturation") -> np.ndarray:
    """(H, W) float32 tissue evidence from (H, W, 3) uint8 RGB; higher = more likely tissue."""
    img = np.asarray(rgb, dtype=np.float32) / 255.0
    if channel == "saturation":
        cmax, cmin = img.max(axis=2), img.min(axis=2)
        return np.where(cmax > 0, (cmax - cmin) / np.maximum(cmax, 1e-6), 0.0).astype(np.float32)
    if channel == "optical_density":
        return (-np.log(np.clip(img, 1.0 / 255.0, 1.0))).sum(axis=2).astype(np.float32)
    raise CosynthError(f"tissue channel must be 'saturation' or 'optical_density', got {channel!r}")


def tissue_mask_from_rgb(rgb: np.ndarray, mpp: float, params: TissueParams = TissueParams()) -> tuple[np.ndarray, float]:
    """Tissue mask of a thumbnail.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 thumbnail.
    mpp : microns per thumbnail pixel (converts the area settings to pixels).
    params : detection settings.

    Returns
    -------
    mask : (H, W) bool, True = tissue.
    threshold : the clamped Otsu threshold on the chosen channel.
    """
    from scipy import ndimage

    lo, hi = params.clamp()
    values = tissue_channel(rgb, params.channel)
    if params.smooth_sigma_px > 0:
        values = ndimage.gaussian_filter(values, params.smooth_sigma_px)
    otsu = float(otsu_threshold(values)) if float(values.max()) > float(values.min()) else hi
    threshold = float(np.clip(otsu, lo, hi))
    mask = values > threshold
    px_area = mpp * mpp
    min_obj = int(params.min_object_um2 / px_area)
    if min_obj > 1:
        mask = remove_small_objects(mask, min_obj)
    max_hole = int(params.max_hole_um2 / px_area)
    if max_hole > 0:
        mask = _fill_small_holes(mask, max_hole)
    return mask, threshold


def _fill_small_holes(mask: np.ndarray, max_hole_px: int) -> np.ndarray:
    """Fill background regions of at most ``max_hole_px`` pixels that tissue encloses.

    Background touching the thumbnail's border is glass around the tissue, never a hole
    (skimage's remove_small_holes would fill a small glass margin of a small slide region).
    """
    from scipy import ndimage

    holes, n = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
    if n == 0:
        return mask
    sizes = np.bincount(holes.ravel(), minlength=n + 1)
    small = sizes <= max_hole_px
    small[0] = False
    return mask | small[holes]


def otsu_threshold(values: np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold of a non-constant array, as ``skimage.filters.threshold_otsu`` computes it.

    A 256-bin histogram over [min, max]; the threshold is the bin centre that maximises the
    between-class variance (Otsu 1979). Written out here so that tissue detection does not import
    scikit-image (~1.5 s); equality with scikit-image is tested.
    """
    counts, edges = np.histogram(np.asarray(values).reshape(-1), bins=nbins)
    centres = (edges[:-1] + edges[1:]) / 2.0
    counts = counts.astype(np.float32)
    # Class weights and means for every split, then the between-class variance.
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * centres) / weight1
    mean2 = (np.cumsum((counts * centres)[::-1]) / weight2[::-1])[::-1]
    variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centres[np.argmax(variance12)])


def remove_small_objects(mask: np.ndarray, min_size_px: int) -> np.ndarray:
    """(H, W) bool ``mask`` without 4-connected components of fewer than ``min_size_px`` pixels
    (``skimage.morphology.remove_small_objects`` with connectivity 1; equality tested)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask.copy()
    small = np.bincount(labels.ravel()) < min_size_px
    small[0] = False
    return mask & ~small[labels]


def default_mask_mpp(slide_mpp: float, dimensions: tuple[int, int], tile_extent_um: float) -> float:
    """A mask resolution with >= 16 mask pixels per tile side, at most 8 um/px, at most 4096 px wide."""
    mpp = min(8.0, tile_extent_um / 16.0)
    extent_um = max(dimensions) * slide_mpp
    return max(mpp, slide_mpp, extent_um / 4096.0)


def detect_tissue(reader, *, mpp: float, params: TissueParams = TissueParams()) -> TissueMask:
    """Tissue mask of a whole slide from its thumbnail at ``mpp`` (a :class:`SlideReader`)."""
    thumb = reader.read_thumbnail(mpp)
    mask, threshold = tissue_mask_from_rgb(thumb, mpp, params)
    return TissueMask(mask=mask, mpp=mpp, scale_to_level0=mpp / reader.mpp, threshold=threshold, params=params)


def mask_png_bytes(mask: np.ndarray) -> bytes:
    """PNG bytes of a (H, W) bool mask (tissue white, background black)."""
    from ..png import encode_png

    return encode_png(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)


def save_mask_png(path: str | Path, mask: np.ndarray) -> Path:
    """Write a tissue mask as an 8-bit PNG (255 = tissue), atomically."""
    from ..atomic import write_bytes_atomic

    write_bytes_atomic(path, mask_png_bytes(mask))
    return Path(path)
