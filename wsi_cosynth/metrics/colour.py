"""Colour difference between sets of tiles: CIE 1976 Delta E*ab between their mean CIELAB colours.

A set's colour is the mean L*, a*, b* over the tissue pixels of all its tiles (glass excluded by
:func:`wsi_cosynth.colour.tissue_weight`); two sets differ by the Euclidean distance between
those means, in CIELAB units (about 2.3 is a just-noticeable difference). Used to ask whether a
slide's synthetic tiles carry that slide's stain: compare them with the same slide's real tiles,
against the floors of two halves of one slide and of two different slides.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..colour import colour_stats


def mean_lab(images: Sequence[np.ndarray]) -> np.ndarray:
    """(3,) float64: the mean L*, a*, b* over the tissue pixels of (H, W, 3) uint8 ``images``."""
    return np.asarray(colour_stats(list(images)).mean, dtype=np.float64)


def colour_difference(images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray]) -> float:
    """Delta E*ab (CIE 1976) between the mean tissue colours of two sets of tiles."""
    return float(np.linalg.norm(mean_lab(images_a) - mean_lab(images_b)))
