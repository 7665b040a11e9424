"""The detector's speck filter, calibrated from its training labels.

The watershed of a predicted distance map leaves specks: a few foreground pixels in stroma or at
a smudge of haematoxylin, each counted as a nucleus. Real nuclei are far larger, so a detector
drops any found object smaller than almost every nucleus it was trained on: the ``percentile``-th
percentile of the areas of the training labels' whole nuclei (those not cut by a tile border,
whose areas say nothing about nucleus size). It is a property of the training data, never of
the images a detector is scored on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import CosynthError
from ..records import LabelledTile

SPECK_PERCENTILE = 1.0  # drop what is smaller than 99% of the nuclei annotators drew


def whole_nucleus_areas(instances: np.ndarray) -> np.ndarray:
    """Pixel areas of the instances of an (H, W) map that do not touch its border."""
    counts = np.bincount(instances.ravel())
    cut = np.unique(np.concatenate([instances[0], instances[-1], instances[:, 0], instances[:, -1]]))
    ids = np.arange(len(counts))
    whole = (counts > 0) & (ids > 0) & ~np.isin(ids, cut)
    return counts[whole]


def speck_area(tiles: Sequence[LabelledTile], percentile: float = SPECK_PERCENTILE) -> int:
    """Area (px at the tiles' resolution) under which a found object is a speck, not a nucleus."""
    if not 0 <= percentile < 50:
        raise CosynthError(f"speck percentile must be in [0, 50), not {percentile}")
    areas = [whole_nucleus_areas(t.instances) for t in tiles]
    pooled = np.concatenate(areas) if areas else np.zeros(0, np.int64)
    if len(pooled) == 0:
        raise CosynthError("no whole nucleus in the training tiles to calibrate the speck filter on")
    return int(np.floor(np.percentile(pooled, percentile)))


def drop_specks(instances: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """``instances`` less the objects under ``min_area`` px that do not touch the image border (a
    nucleus cut by the border may show only a sliver of itself); (new map, kept old ids - 1)."""
    n = int(instances.max()) if instances.size else 0
    counts = np.bincount(instances.ravel(), minlength=n + 1)
    keep = counts >= min_area
    keep[np.unique(np.concatenate([instances[0], instances[-1], instances[:, 0], instances[:, -1]]))] = True
    keep[0] = False
    kept = np.flatnonzero(keep[1:])
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[kept + 1] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return remap[instances], kept
