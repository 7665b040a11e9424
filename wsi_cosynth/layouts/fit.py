"""Fit the layout point process (:mod:`wsi_cosynth.layouts.point_process`) to real layouts.

Steps (one model per tissue type):
1. ``hardcore[i][j]``: the ``hardcore_quantile`` of distances from class-i points to their nearest
   class-j point (symmetrised by the minimum); pairs never observed take the global value.
2. Compartments, read off the real points: every point gets a feature vector (class composition
   of its ``n_neighbours`` nearest neighbours, and its log local density); k-means groups the
   points into ``n_compartments`` compartments whose class mixes are the members' class
   fractions. The area of a compartment is that of the grid cells whose nearest point belongs to
   it and lies within a coverage factor times the local mean spacing (``sqrt(pi / k) * d_k``);
   cells farther from every point form the empty compartment. Density = members / area. The field offsets ``b_m``
   that give these area fractions are found by Monte Carlo (the argmax of independent unit
   Gaussians at one location has the mosaic's one-point law).
3. The coverage factor of step 2 (1 or 1.5 local spacings), then ``length_compartment_px``,
   ``spacing_kappa``, ``softness`` (only with a core) and ``mark_coupling``: coordinate search
   over small grids by simulation, minimising :func:`~wsi_cosynth.layouts.stats.layout_distance`
   between simulated tiles and the real layouts (density, nearest-neighbour distances overall and
   per class, Ripley's L per class pair, composition), with common random numbers; after each
   step the densities are rescaled so the simulated mean count matches the observed one (RSA with
   a core can fall short of its target).

Real windows cut from a slide are usually kept only when they hold enough nuclei; when no real
layout has fewer than ``n_min`` nuclei, simulated tiles with fewer are left out of the comparison
in the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy.spatial import cKDTree

from ..errors import CosynthError
from ..records import Layout
from .point_process import Compartment, LayoutModel, sample_layout
from .stats import layout_distance, layout_statistics

_LENGTH_GRID_PX = (32.0, 64.0, 128.0, 256.0, 512.0)
_KAPPA_GRID = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7)
_SOFTNESS_GRID = (0.0, 0.1, 0.3)
_COVERAGE_GRID = (1.0, 1.5)
_COUPLING_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
_MAX_FIT_LAYOUTS = 400  # real layouts whose statistics the simulation is compared with
_MAX_AREA_LAYOUTS = 2000  # real layouts the compartments are read from


def _hardcore(layouts: Sequence[Layout], k: int, q: float) -> np.ndarray:
    samples: dict[tuple[int, int], list[np.ndarray]] = {}
    allnn: list[np.ndarray] = []
    for lay in layouts:
        if len(lay) < 2:
            continue
        d, _ = cKDTree(lay.xy_tile).query(lay.xy_tile, k=2)
        allnn.append(d[:, 1])
        for j in range(1, k + 1):
            pj = lay.xy_tile[lay.classes == j]
            if len(pj) == 0:
                continue
            tree = cKDTree(pj)
            for i in range(1, k + 1):
                pi = lay.xy_tile[lay.classes == i]
                if len(pi) == 0 or (i == j and len(pj) < 2):
                    continue
                dd, _ = tree.query(pi, k=2 if i == j else 1)
                samples.setdefault((i, j), []).append(dd[:, 1] if i == j else dd.reshape(-1))
    if not allnn:
        return np.zeros((k, k))
    glob = float(np.quantile(np.concatenate(allnn), q))
    hc = np.full((k, k), glob)
    for (i, j), v in samples.items():
        v = np.concatenate(v)
        if len(v) >= 20:
            hc[i - 1, j - 1] = float(np.quantile(v, q))
    return np.minimum(hc, hc.T)


def _point_features(layouts: Sequence[Layout], k: int, n_nb: int, coverage: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per point: (composition of its neighbourhood (N, K), log local density (N,), coverage radius (N,))."""
    comps, logd, radius = [], [], []
    for lay in layouts:
        n = len(lay)
        if n == 0:
            continue
        kk = min(n_nb, n)
        d, idx = cKDTree(lay.xy_tile).query(lay.xy_tile, k=kk)
        d, idx = d.reshape(n, kk), idx.reshape(n, kk)
        onehot = np.eye(k)[lay.classes - 1]
        comps.append(onehot[idx].mean(axis=1))
        # Distance to the farthest of the kk neighbours (self included) ~ sqrt(kk / (pi lambda));
        # a tile with few points borrows the tile's own mean density.
        dk = d[:, -1] if kk >= 4 else np.full(n, np.sqrt(lay.size[0] * lay.size[1] / np.pi / max(n, 1) * kk))
        dk = np.maximum(dk, 1.0)
        lam = kk / (np.pi * dk**2)
        logd.append(np.log(lam))
        radius.append(coverage / np.sqrt(lam))
    return np.concatenate(comps), np.concatenate(logd), np.concatenate(radius)


def _kmeans(x_all: np.ndarray, m: int, rng: np.random.Generator, iters: int = 30, n_max: int = 20_000) -> np.ndarray:
    """(N,) cluster index of each row of ``x_all`` (Lloyd's algorithm, k-means++ start, centres
    from at most ``n_max`` random rows)."""
    x = x_all if len(x_all) <= n_max else x_all[rng.choice(len(x_all), n_max, replace=False)]
    m = min(m, len(x))
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, m):
        d2 = ((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1).min(axis=1)
        if d2.sum() <= 0:
            break
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())])
    c = np.asarray(centres)
    for _ in range(iters):
        lab = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(axis=1)
        new = np.array([x[lab == j].mean(axis=0) if (lab == j).any() else c[j] for j in range(len(c))])
        if np.allclose(new, c):
            break
        c = new
    return ((x_all[:, None, :] - c[None]) ** 2).sum(-1).argmin(axis=1)


def calibrate_offsets(area_fractions: np.ndarray, rng: np.random.Generator, n: int = 200_000) -> np.ndarray:
    """Offsets ``b`` with ``P(argmax_m (b_m + N_m) = m) = area_fractions[m]`` for iid N(0, 1)."""
    a = np.asarray(area_fractions, dtype=np.float64)
    z = rng.standard_normal((n, len(a)))
    b = np.zeros(len(a))
    for _ in range(60):
        frac = np.bincount((z + b).argmax(axis=1), minlength=len(a)) / n
        b += 0.7 * (np.log(np.maximum(a, 1e-6)) - np.log(np.maximum(frac, 1e-6)))
        b -= b.max()
    return b


def _compartments(layouts: Sequence[Layout], k: int, m: int, n_nb: int, coverage: float, cell_px: float,
                  rng: np.random.Generator) -> list[Compartment]:
    comp, logd, radius = _point_features(layouts, k, n_nb, coverage)
    sd = float(logd.std()) or 1.0
    feats = np.concatenate([comp, 0.5 * ((logd - logd.mean()) / sd)[:, None]], axis=1)
    label = _kmeans(feats, m, rng)
    m = int(label.max()) + 1
    cells = np.zeros(m + 1)  # last: empty
    members = np.bincount(label, minlength=m).astype(np.float64)
    classes = np.concatenate([lay.classes for lay in layouts if len(lay)])
    start = 0
    for lay in layouts:
        h, w = lay.size
        gy, gx = np.meshgrid((np.arange(int(np.ceil(h / cell_px))) + 0.5) * cell_px,
                             (np.arange(int(np.ceil(w / cell_px))) + 0.5) * cell_px, indexing="ij")
        if len(lay) == 0:
            cells[m] += gy.size
            continue
        sl = slice(start, start + len(lay))
        start += len(lay)
        d, idx = cKDTree(lay.xy_tile).query(np.stack([gx.ravel(), gy.ravel()], axis=1))
        covered = d <= radius[sl][idx]
        cells[:m] += np.bincount(label[sl][idx[covered]], minlength=m)
        cells[m] += int((~covered).sum())
    area_px2 = cells * cell_px**2
    frac = cells / cells.sum()
    offsets = calibrate_offsets(frac, rng)
    out = []
    for j in range(m + 1):
        if j == m:
            if frac[m] > 0:
                out.append(Compartment(float(frac[m]), float(offsets[m]), 0.0, tuple([1.0 / k] * k)))
            continue
        probs = np.bincount(classes[label == j], minlength=k + 1)[1:] / max(members[j], 1)
        out.append(Compartment(float(frac[j]), float(offsets[j]), float(members[j] / max(area_px2[j], 1.0)),
                               tuple(float(v) for v in probs)))
    return out


def fit_layout_model(
    layouts: Sequence[Layout],
    rng: np.random.Generator,
    *,
    tissue: str | None = None,
    hardcore_quantile: float = 0.01,
    n_compartments: int = 10,
    n_neighbours: int = 10,
    mark_radius_px: float = 24.0,
    mark_sweeps: int = 5,
    n_sim: int = 48,
) -> LayoutModel:
    """Fit one model to ``layouts`` (all of one taxonomy; their tissue types are not checked).

    Parameters
    ----------
    layouts : real layouts; sizes may differ (the most common size is used for simulation).
    rng : random source of k-means and of the simulation-based steps.
    n_compartments : compartments with nuclei (an empty one is added when real tiles have gaps).
    n_sim : simulated tiles per candidate in the searches (more is slower, smoother).

    Raises
    ------
    CosynthError
        No layouts, no nuclei at all, or mixed taxonomies.
    """
    if len(layouts) == 0:
        raise CosynthError("cannot fit a layout model to an empty set of layouts")
    tax = layouts[0].taxonomy
    for lay in layouts:
        if lay.unclassified.any():
            # The model's marks are classes: a nucleus of unknown class has no mark to fit.
            raise CosynthError(f"layout {lay.provenance.name!r}: {int(lay.unclassified.sum())} nuclei have no class; "
                               "a layout model needs classified nuclei (map them to a class first)")
        if lay.taxonomy.names != tax.names:
            raise CosynthError(f"layout {lay.provenance.name!r} has classes {list(lay.taxonomy.names)}, "
                               f"expected {list(tax.names)} like the first layout")
    counts = np.array([len(lay) for lay in layouts], dtype=np.float64)
    if counts.sum() == 0:
        raise CosynthError(f"cannot fit a layout model: the {len(layouts)} layouts hold no nuclei")
    k = tax.n_classes
    sizes, size_counts = np.unique(np.array([lay.size for lay in layouts]), axis=0, return_counts=True)
    size = (int(sizes[size_counts.argmax()][0]), int(sizes[size_counts.argmax()][1]))
    ref = [lay for lay in layouts if lay.size == size]
    sub = list(layouts)
    if len(sub) > _MAX_AREA_LAYOUTS:
        sub = [sub[i] for i in np.sort(rng.choice(len(sub), _MAX_AREA_LAYOUTS, replace=False))]
    if len(ref) > _MAX_FIT_LAYOUTS:
        ref = [ref[i] for i in np.sort(rng.choice(len(ref), _MAX_FIT_LAYOUTS, replace=False))]
    n_min = int(min(len(lay) for lay in ref))
    mean_count = float(np.mean([len(lay) for lay in ref]))
    real_stats = layout_statistics(ref)
    mpps = [lay.provenance.mpp for lay in layouts if lay.provenance.mpp]
    seed = int(rng.integers(2**31))

    def simulate(m: LayoutModel) -> list[Layout]:
        # Common random numbers: every candidate sees the same seeds.
        sim_rng = np.random.default_rng(seed)
        sims = [sample_layout(m, size, sim_rng) for _ in range(n_sim)]
        return [s for s in sims if len(s) >= n_min] or sims

    def rescale(m: LayoutModel) -> LayoutModel:
        sim_mean = float(np.mean([len(s) for s in simulate(m)]))
        f = mean_count / max(sim_mean, 1e-6)
        return replace(m, compartments=tuple(replace(c, density_per_px2=c.density_per_px2 * f)
                                             for c in m.compartments))

    def error(m: LayoutModel) -> float:
        return layout_distance(layout_statistics(simulate(m)), real_stats).total

    model = LayoutModel(
        taxonomy=tax, tissue=tissue, mpp=float(np.median(mpps)) if mpps else None,
        compartments=(),
        length_compartment_px=128.0,
        hardcore_px=tuple(tuple(float(v) for v in row) for row in _hardcore(layouts, k, hardcore_quantile)),
        spacing_kappa=0.0, softness=0.0, mark_coupling=0.0, mark_radius_px=mark_radius_px,
        mark_sweeps=mark_sweeps, n_layouts=len(layouts),
    )
    # The coverage factor decides how much of a tile counts as empty; k-means sees the same seed
    # for every factor, so only the areas (and densities) differ between candidates.
    km_seed = int(rng.integers(2**31))
    best, best_err = model, np.inf
    for cov in _COVERAGE_GRID:
        comps = _compartments(sub, k, n_compartments, n_neighbours, cov, 8.0, np.random.default_rng(km_seed))
        cand = rescale(replace(model, compartments=tuple(comps)))
        err = error(cand)
        if err < best_err:
            best, best_err = cand, err
    steps = (("length_compartment_px", _LENGTH_GRID_PX), ("spacing_kappa", _KAPPA_GRID),
             ("softness", _SOFTNESS_GRID), ("mark_coupling", _COUPLING_GRID), ("length_compartment_px", _LENGTH_GRID_PX))
    for field, grid in steps:
        for v in grid:
            if getattr(best, field) == v or (field == "softness" and best.spacing_kappa == 0):
                continue
            cand = rescale(replace(best, **{field: v}))
            err = error(cand)
            if err < best_err:
                best, best_err = cand, err
    return best


def fit_layout_models(layouts: Sequence[Layout], rng: np.random.Generator, **options) -> dict[str | None, LayoutModel]:
    """One model per tissue type (``layout.tissue``; None groups layouts without one)."""
    groups: dict[str | None, list[Layout]] = {}
    for lay in layouts:
        groups.setdefault(lay.tissue, []).append(lay)
    return {t: fit_layout_model(g, rng, tissue=t, **options) for t, g in groups.items()}
