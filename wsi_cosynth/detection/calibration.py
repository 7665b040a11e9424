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
from ..records import LabelledTile, relabel_contiguous

SPECK_PERCENTILE = 1.0  # drop what is smaller than 99% of the nuclei annotators drew


def edge_ids(instances: np.ndarray) -> np.ndarray:
    """Ids of the instances of an (H, W) map that touch its border (0 included when it does)."""
    return np.unique(np.concatenate([instances[0], instances[-1], instances[:, 0], instances[:, -1]]))


def whole_nucleus_areas(instances: np.ndarray) -> np.ndarray:
    """Pixel areas of the instances of an (H, W) map that do not touch its border."""
    counts = np.bincount(instances.ravel())
    whole = counts > 0
    whole[0] = False
    whole[edge_ids(instances)] = False
    return counts[whole]


def speck_area(tiles: Sequence[LabelledTile], percentile: float = SPECK_PERCENTILE) -> int:
    """Area (px at the tiles' resolution) under which a found object is a speck, not a nucleus."""
    if not 0 <= percentile < 50:
        raise CosynthError(f"speck percentile must be in [0, 50), not {percentile}")
    pooled = np.concatenate([whole_nucleus_areas(t.instances) for t in tiles] + [np.zeros(0, np.int64)])
    if len(pooled) == 0:
        raise CosynthError("no whole nucleus in the training tiles to calibrate the speck filter on")
    return int(np.floor(np.percentile(pooled, percentile)))


def drop_specks(instances: np.ndarray, classes: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """``instances`` (ids 1..N) and their ``classes`` less the objects under ``min_area`` px that do
    not touch the image border (a nucleus cut by the border may show only a sliver of itself),
    renumbered 1..M."""
    keep = np.bincount(instances.ravel(), minlength=len(classes) + 1) >= min_area
    keep[edge_ids(instances)] = True
    keep[0] = False
    return relabel_contiguous(np.where(keep[instances], instances, 0), np.concatenate([[0], classes]))
