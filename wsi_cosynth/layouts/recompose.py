"""Re-composition: give a layout target class proportions while keeping its positions.

Relabelling points at random would destroy class clustering. Instead the fewest points change
class, and each change goes to the point whose neighbourhood already holds most points of the
class it receives, so new class members grow out of existing clusters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from scipy.spatial import cKDTree

from ..errors import CosynthError
from ..records import Layout


def target_counts(proportions: np.ndarray, n: int) -> np.ndarray:
    """(K,) integer counts summing to ``n``, proportional to ``proportions`` (largest remainder)."""
    p = np.asarray(proportions, dtype=np.float64)
    exact = p / p.sum() * n
    base = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: n - int(base.sum())]] += 1
    return base


def recompose(
    layout: Layout,
    proportions: Mapping[str, float] | np.ndarray,
    rng: np.random.Generator,
    *,
    n_neighbours: int = 6,
) -> Layout:
    """Relabel points so class counts follow ``proportions``.

    Parameters
    ----------
    proportions : ``{class name: weight}`` (missing classes get 0) or a (K,) array over class ids
        1..K; weights are normalised; must be >= 0 with a positive sum.
    rng : breaks ties between equally good points.
    n_neighbours : neighbourhood size used to score where a class should grow.
    """
    tax = layout.taxonomy
    k = tax.n_classes
    if isinstance(proportions, Mapping):
        p = np.zeros(k)
        for name, v in proportions.items():
            p[tax.id_of(name, where="target proportions") - 1] = float(v)
    else:
        p = np.asarray(proportions, dtype=np.float64).reshape(-1)
        if len(p) != k:
            raise CosynthError(f"target proportions: expected {k} values ({', '.join(tax.names)}), got {len(p)}")
    if (p < 0).any() or not p.sum() > 0 or not np.isfinite(p).all():
        raise CosynthError(f"target proportions must be >= 0 with a positive sum, got {p.tolist()}")
    n = len(layout)
    if n == 0:
        return layout
    cls = layout.classes.copy()
    want = target_counts(p, n)
    have = np.bincount(cls, minlength=k + 1)[1:]
    nb = min(n_neighbours + 1, n)
    _, idx = cKDTree(layout.xy_tile).query(layout.xy_tile, k=nb)
    idx = idx.reshape(n, nb)[:, 1:]
    tie = rng.random(n) * 1e-3
    while (have < want).any():
        c = int(np.argmax(want - have)) + 1  # the class most short of its target
        donors = np.flatnonzero(have[cls - 1] > want[cls - 1])
        score = (cls[idx[donors]] == c).sum(axis=1) + tie[donors]
        j = donors[int(np.argmax(score))]
        have[cls[j] - 1] -= 1
        cls[j] = c
        have[c - 1] += 1
    return replace(layout, classes=cls)
