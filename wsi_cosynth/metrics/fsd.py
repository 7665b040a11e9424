"""FSD: Frechet distance between per-image class-proportion vectors of the semantic labels.

Definition (Semantic Palette, Le Moing et al., CVPR 2021, after Bau et al.'s Frechet
Segmentation Distance): for every image, the fraction of its pixels in each semantic class
(background included, so a vector sums to 1); fit a Gaussian to each set's vectors and take the
Frechet distance between the two, exactly as FID does with Inception features.

Scale: the proportions are in PERCENT (0..100), as Semantic Palette's released code does for the
variant it logs as ``fsd_count`` (``tgt_cond * 100``), and as Bau et al.'s ``netdissect.fsd``
does. The CoSyn paper's numbers (0.13 to 65.06) can only be on this scale: with proportions in
[0, 1] an FSD can hardly exceed 2. A value on the [0, 1] scale is the percent value / 10^4.
"""

from __future__ import annotations

import numpy as np

from ..errors import CosynthError
from .fid import MIN_IMAGES_FOR_COVARIANCE, frechet_distance, gaussian_stats

#: Factor from pixel fractions to the scale FSD is reported on (percent).
FSD_SCALE = 100.0


def class_proportions(semantic: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class pixel share of one semantic label map, in percent.

    Parameters
    ----------
    semantic : (H, W) integer, 0 = background, 1..K = class ids
    n_classes : K, the number of nucleus classes (background excluded)

    Returns
    -------
    (K + 1,) float64 in [0, 100], index 0 = background; sums to 100.
    """
    sem = np.asarray(semantic)
    if sem.ndim != 2 or sem.size == 0:
        raise CosynthError(f"class_proportions: expected a non-empty (H, W) label map, got shape {sem.shape}")
    if sem.min() < 0 or sem.max() > n_classes:
        raise CosynthError(f"class_proportions: label values must be in 0..{n_classes}, found {int(sem.min())}..{int(sem.max())}")
    counts = np.bincount(sem.reshape(-1).astype(np.int64), minlength=n_classes + 1)
    return FSD_SCALE * counts.astype(np.float64) / sem.size


def fsd_from_proportions(props_a: np.ndarray, props_b: np.ndarray) -> float:
    """FSD between two sets of class-proportion vectors.

    Parameters
    ----------
    props_a, props_b : (N_a, K + 1), (N_b, K + 1) float in percent (see :func:`class_proportions`),
        both over the same classes in the same order; N >= 2 each.

    Returns
    -------
    float >= 0, in squared percent.
    """
    a = np.asarray(props_a, dtype=np.float64)
    b = np.asarray(props_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise CosynthError(f"FSD: proportion arrays must be (N, K+1) over the same classes, got {a.shape} and {b.shape}")
    for name, x in (("first set", a), ("second set", b)):
        if len(x) < MIN_IMAGES_FOR_COVARIANCE:
            raise CosynthError(f"FSD: {name} has {len(x)} image(s); at least {MIN_IMAGES_FOR_COVARIANCE} are needed")
    sa = gaussian_stats(a, name="first set")
    sb = gaussian_stats(b, name="second set")
    return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
