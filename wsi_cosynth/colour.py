"""A slide's own look: colour statistics of its tiles and colour matching of synthetic tiles.

Stain and scanner differ between labs more than tissue differs between organs, so a synthetic
tile is matched to the real tile (or slide region) its layout came from: Reinhard et al.'s
colour transfer (2001) in CIELAB, on tissue pixels. Each channel of the synthetic tile's tissue
is moved to the reference's mean and standard deviation,
``L' = (L - mu_syn) * sigma_ref / sigma_syn + mu_ref`` (likewise a*, b*); glass keeps its colour
(a soft tissue weight blends the two, so no seam appears at the tissue's edge). The blend, the
tissue weights of the new colours and the sRGB gamut each pull the result's mean a little off
the reference's, so ``CORRECTION_PASSES`` passes then measure the result as the reference was
measured and shift its tissue by what is left. The reference is a real image or its
:class:`ColourStats` (six numbers: what a worker needs, small to ship).

CIELAB here is sRGB (D65) -> CIE 1976 L*a*b*, written out with numpy (no scikit-image import on
the sampling path); L* in [0, 100], a*, b* roughly in [-128, 127].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import CosynthError

# sRGB (D65) linear RGB -> XYZ, and the D65 white point (IEC 61966-2-1; CIE 15).
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE_D65 = np.array([0.950456, 1.0, 1.088754])
_DELTA = 6.0 / 29.0

# Glass: bright and nearly grey. A pixel's tissue weight falls from 1 to 0 as L* rises past
# GLASS_L and its chroma drops under GLASS_CHROMA (soft edges of GLASS_SOFTNESS units).
GLASS_L = 88.0
GLASS_CHROMA = 8.0
GLASS_SOFTNESS = 2.0
MIN_STD = 1.0  # a channel flatter than this (in CIELAB units) is shifted, not stretched
MAX_GAIN = 3.0  # a tile's contrast is scaled by at most this factor either way
CORRECTION_PASSES = 2  # mean corrections after the transfer (module docstring)


@dataclass(frozen=True)
class ColourStats:
    """Mean and standard deviation of L*, a*, b* over a tile's tissue pixels (CIELAB units)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "ColourStats":
        try:
            mean, std = tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"])
        except (KeyError, TypeError, ValueError):
            raise CosynthError(f"colour statistics must be {{mean: [L, a, b], std: [L, a, b]}}, got {str(d)[:80]}") from None
        if len(mean) != 3 or len(std) != 3 or not np.isfinite(mean + std).all() or min(std) < 0:
            raise CosynthError(f"colour statistics must be three finite means and three non-negative deviations, got {d}")
        return cls(mean, std)  # type: ignore[arg-type]


def _check_rgb(image: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or arr.size == 0:
        raise CosynthError(f"{what} must be an (H, W, 3) uint8 RGB image, got {arr.shape} {arr.dtype}")
    return arr


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> (H, W, 3) float64 CIELAB (D65)."""
    rgb = _check_rgb(image, "image").astype(np.float64) / 255.0
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE_D65
    f = np.where(xyz > _DELTA ** 3, np.cbrt(xyz), xyz / (3 * _DELTA ** 2) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(H, W, 3) float CIELAB (D65) -> (H, W, 3) uint8 sRGB (out-of-gamut colours clipped)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], -1)
    xyz = np.where(f > _DELTA, f ** 3, 3 * _DELTA ** 2 * (f - 4.0 / 29.0)) * _WHITE_D65
    linear = np.clip(xyz @ _XYZ_TO_RGB.T, 0.0, 1.0)
    rgb = np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def tissue_weight(lab: np.ndarray) -> np.ndarray:
    """(H, W) float64 in [0, 1]: 0 for glass (bright and grey), 1 for stained tissue."""
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    bright = 1.0 / (1.0 + np.exp(-(lab[..., 0] - GLASS_L) / GLASS_SOFTNESS))
    grey = 1.0 / (1.0 + np.exp(-(GLASS_CHROMA - chroma) / GLASS_SOFTNESS))
    return 1.0 - bright * grey


def _weighted_stats(lab: np.ndarray, weight: np.ndarray) -> ColourStats:
    w = weight.reshape(-1)
    values = lab.reshape(-1, 3)
    total = float(w.sum())
    if total < 1.0:  # no tissue at all: the whole tile stands for itself
        w, total = np.ones_like(w), float(len(w))
    mean = (values * w[:, None]).sum(0) / total
    std = np.sqrt(((values - mean) ** 2 * w[:, None]).sum(0) / total)
    return ColourStats(tuple(float(v) for v in mean), tuple(float(v) for v in std))  # type: ignore[arg-type]


def colour_stats(images: np.ndarray | Sequence[np.ndarray]) -> ColourStats:
    """CIELAB mean and deviation over the tissue pixels of one (H, W, 3) uint8 image, or of
    several together (e.g. a slide region's tiles)."""
    batch = [images] if isinstance(images, np.ndarray) and np.asarray(images).ndim == 3 else list(images)
    if not batch:
        raise CosynthError("colour statistics of no image")
    labs = [rgb_to_lab(im).reshape(-1, 3) for im in batch]
    lab = np.concatenate(labs)
    return _weighted_stats(lab, tissue_weight(lab))


def as_colour_stats(reference: "ColourStats | np.ndarray | dict") -> ColourStats:
    """A reference given as statistics, a dict of them, or a real image (its statistics)."""
    if isinstance(reference, ColourStats):
        return reference
    if isinstance(reference, dict):
        return ColourStats.from_dict(reference)
    return colour_stats(_check_rgb(reference, "colour reference"))


def match_colour(image: np.ndarray, reference: "ColourStats | np.ndarray | dict") -> np.ndarray:
    """``image`` (H, W, 3) uint8 with its tissue's CIELAB statistics moved to the reference's
    (Reinhard transfer, module docstring); glass keeps its colour. Returns a new uint8 image."""
    target = as_colour_stats(reference)
    lab = rgb_to_lab(_check_rgb(image, "image"))
    weight = tissue_weight(lab)
    own = _weighted_stats(lab, weight)
    mu_s, sd_s = np.array(own.mean), np.array(own.std)
    mu_r, sd_r = np.array(target.mean), np.array(target.std)
    # Flat channels are only shifted; otherwise the contrast gain is bounded, so a nearly
    # uniform synthetic tile is not blown up into noise.
    gain = np.where((sd_s >= MIN_STD) & (sd_r >= MIN_STD), np.clip(sd_r / np.maximum(sd_s, 1e-9), 1 / MAX_GAIN, MAX_GAIN), 1.0)
    moved = (lab - mu_s) * gain + mu_r
    moved[..., 0] = np.clip(moved[..., 0], 0.0, 100.0)
    out = lab_to_rgb(weight[..., None] * moved + (1.0 - weight[..., None]) * lab)
    for _ in range(CORRECTION_PASSES):
        got = rgb_to_lab(out)
        w = tissue_weight(got)
        residual = mu_r - np.array(_weighted_stats(got, w).mean)
        if np.linalg.norm(residual) < 0.25:
            break
        got += w[..., None] * residual
        got[..., 0] = np.clip(got[..., 0], 0.0, 100.0)
        out = lab_to_rgb(got)
    return out


def reference_per_layout(reference: object, n: int) -> list[ColourStats | None]:
    """The colour reference of each of ``n`` layouts: None (no matching), one reference for all
    (an image, :class:`ColourStats` or its dict), or a list of ``n`` of those or None."""
    if reference is None:
        return [None] * n
    if isinstance(reference, (list, tuple)):
        if len(reference) != n:
            raise CosynthError(f"colour_reference: {len(reference)} references for {n} layouts (give one, or one per layout)")
        return [None if r is None else as_colour_stats(r) for r in reference]  # type: ignore[arg-type]
    one = as_colour_stats(reference)  # type: ignore[arg-type]
    return [one] * n
