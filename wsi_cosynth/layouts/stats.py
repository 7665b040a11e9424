"""Layout statistics and a distance between two SETS of layouts.

Statistics (per layout, then pooled over a set):

- ``density``: nuclei per 10^4 px^2, one value per layout;
- ``nn``: nearest-neighbour distance (px) of every point to any other point;
- ``nn_same/<class>``: distance of each class-c point to the nearest other class-c point;
- ``L/<ci>-<cj>``: Besag's L-function ``L(r) = sqrt(K(r) / pi)`` of class ci around class cj at
  radii ``RADII_PX``, one value per layout and radius (no edge correction: both sets are windows
  of the same kind, so the bias is shared);
- ``composition/<class>``: fraction of the layout's nuclei in each class.

:func:`layout_distance` compares two sets statistic by statistic with the 1-D Wasserstein
distance, divided by the standard deviation of the pooled values so that every statistic is
unit-free, and summarises them as the mean over statistic groups (density, nn, nn_same, L,
composition; within a group the mean over classes / pairs / radii).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import wasserstein_distance

from ..errors import CosynthError
from ..records import Layout

RADII_PX: tuple[float, ...] = (10.0, 20.0, 40.0, 60.0)


def nn_distances(xy: np.ndarray) -> np.ndarray:
    """(N,) distance of each point to its nearest other point (empty if N < 2)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 2:
        return np.zeros(0)
    d, _ = cKDTree(xy).query(xy, k=2)
    return d[:, 1]


def l_function(xy_i: np.ndarray, xy_j: np.ndarray, area: float, radii: Sequence[float], same: bool) -> np.ndarray:
    """Besag's L(r) of points j around points i in a window of ``area`` px^2 (no edge correction)."""
    n_i, n_j = len(xy_i), len(xy_j)
    if n_i == 0 or n_j - int(same) <= 0:
        return np.full(len(radii), np.nan)
    tree_j = cKDTree(xy_j)
    counts = np.array([tree_j.query_ball_point(xy_i, r, return_length=True).sum() for r in radii], dtype=np.float64)
    if same:
        counts -= n_i  # each point finds itself
    k = area * counts / (n_i * (n_j - int(same)))
    return np.sqrt(k / np.pi)


def layout_statistics(layouts: Sequence[Layout], *, radii: Sequence[float] = RADII_PX) -> dict[str, np.ndarray]:
    """Pooled samples of every statistic over a set of layouts (keys as in the module docstring).

    All layouts must share one taxonomy (class names are used in the keys).
    """
    if len(layouts) == 0:
        raise CosynthError("layout statistics need at least one layout, got an empty set")
    tax = layouts[0].taxonomy
    for lay in layouts:
        if lay.taxonomy.names != tax.names:
            raise CosynthError(
                f"layout {lay.provenance.name!r} uses classes {list(lay.taxonomy.names)}, expected {list(tax.names)}"
            )
    k = tax.n_classes
    out: dict[str, list] = {"density": [], "nn": []}
    for lay in layouts:
        h, w = lay.size
        area = float(h * w)
        out["density"].append(len(lay) / area * 1e4)
        out["nn"].extend(nn_distances(lay.xy_tile))
        for c in range(1, k + 1):
            name = tax.names[c - 1]
            pts = lay.xy_tile[lay.classes == c]
            out.setdefault(f"nn_same/{name}", []).extend(nn_distances(pts))
            out.setdefault(f"composition/{name}", [])
            if len(lay):
                out[f"composition/{name}"].append(len(pts) / len(lay))
        for ci in range(1, k + 1):
            for cj in range(ci, k + 1):
                lv = l_function(lay.xy_tile[lay.classes == ci], lay.xy_tile[lay.classes == cj], area, radii, ci == cj)
                for r, v in zip(radii, lv):
                    if np.isfinite(v):
                        out.setdefault(f"L/{tax.names[ci - 1]}-{tax.names[cj - 1]}/r{r:g}", []).append(v)
    return {key: np.asarray(v, dtype=np.float64) for key, v in out.items()}


@dataclass(frozen=True)
class LayoutDistance:
    """``total``: mean of the group scores; ``groups``: per group; ``per_statistic``: every key."""

    total: float
    groups: dict[str, float]
    per_statistic: dict[str, float]

    def to_dict(self) -> dict:
        return {"total": self.total, "groups": self.groups, "per_statistic": self.per_statistic}


def _normalised_w1(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) == 0 or len(b) == 0:
        return None
    scale = float(np.concatenate([a, b]).std())
    w = float(wasserstein_distance(a, b))
    return w / scale if scale > 0 else 0.0


def layout_distance(
    set_a: Sequence[Layout] | dict[str, np.ndarray],
    set_b: Sequence[Layout] | dict[str, np.ndarray],
) -> LayoutDistance:
    """Distance between two sets of layouts (or their precomputed :func:`layout_statistics`).

    Each statistic: 1-D Wasserstein distance between the two sets' samples divided by the pooled
    standard deviation. A statistic with no samples in either set is skipped (e.g. a class absent
    from one set). 0 means the same distributions; ~0.1 is typical between two halves of one
    dataset; values near 1 mean the distributions are about one standard deviation apart.
    """
    sa = set_a if isinstance(set_a, dict) else layout_statistics(set_a)
    sb = set_b if isinstance(set_b, dict) else layout_statistics(set_b)
    per: dict[str, float] = {}
    for key in sorted(set(sa) & set(sb)):
        v = _normalised_w1(sa[key], sb[key])
        if v is not None:
            per[key] = v
    groups: dict[str, list[float]] = {}
    for key, v in per.items():
        groups.setdefault(key.split("/")[0], []).append(v)
    group_means = {g: float(np.mean(v)) for g, v in groups.items()}
    total = float(np.mean(list(group_means.values()))) if group_means else float("nan")
    return LayoutDistance(total, group_means, per)
