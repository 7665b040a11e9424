"""A generative model of nuclei layouts: a marked Cox process on a random tissue partition, with
locally scaled hard-core inhibition.

Model (per tissue type; all lengths in pixels of the layouts it was fitted on)
------------------------------------------------------------------------------
1. Compartments. Tissue is a mosaic of compartments (e.g. gland epithelium, stroma, lymphoid
   aggregate, lumen / background with no nuclei). ``M`` compartments, each with a nuclei density
   ``lambda_m`` (points per px^2, 0 for the empty one) and a class mix ``p_m`` (K,). The mosaic is
   ``m(x) = argmax_m (b_m + Z_m(x))`` with ``Z_m`` independent stationary unit Gaussian random
   fields of correlation length ``length_compartment_px`` (a "plurigaussian" random partition);
   the offsets ``b_m`` are set so compartment ``m`` covers its fitted area fraction.
2. Points. Given the mosaic, points follow the intensity ``Lambda(x) = lambda_{m(x)}``: a Cox
   process whose tile counts are over-dispersed and whose density, composition and class
   co-occurrence (inflammatory cells among spindle cells in stroma) vary from tile to tile as the
   mosaic does.
3. Class marks: an auto-logistic (Potts) model on the placed points. Given its neighbours within
   ``mark_radius_px``, a point has class c with probability proportional to
   ``p_{m(x),c} * exp(mark_coupling * n_c)``, ``n_c`` the number of its class-c neighbours; a few
   Gibbs sweeps (``mark_sweeps``) from marks drawn from ``p_{m(x)}`` sample it. Positive coupling
   makes nuclei of one class come in groups (lymphocyte aggregates, epithelial rows), also a
   minority class inside a compartment. Classes that would break the class-pair hard core
   (step 4) are not allowed.
4. Spacing. Nuclei do not overlap and pack regularly: points are placed by random sequential
   adsorption (RSA). A candidate of class i at ``x`` is rejected if a kept point of class j lies
   closer than ``hardcore[i][j]`` (a low quantile of observed class-i to class-j nearest
   distances), and rejected with probability ``1 - softness`` if a kept point lies closer than
   ``spacing_kappa / sqrt(Lambda(x))``: a core scaled to the local mean spacing, so dense
   epithelium and sparse stroma are both as regular as in real tissue. Rejected candidates are
   redrawn from ``Lambda``, so the intensity is kept.

Why this model: every parameter maps onto a statistic that describes nuclei layouts (density and
its spread -> compartment densities and areas; composition and class co-occurrence -> compartment
class mixes; class clustering -> ``mark_coupling``; spacing, nearest-neighbour distances and the
short-range L-function -> the cores), the compartments are read off real layouts directly and
the few remaining scalars are fitted by simulation in seconds. Because the fields are
stationary it samples windows of ANY size, from a 256 px tile to a whole slide region, with the
same statistics. A model with one global intensity and per-class mark fields (version 1) cannot
make classes co-occur, nor make dense and sparse regions both regular; Gibbs models (Strauss,
multi-type pair potentials) would need MCMC to sample and to fit; Neyman-Scott cluster
processes have no natural way to express the hard core.

Fitting lives in :mod:`wsi_cosynth.layouts.fit`. The fitted model is a small JSON file
(:func:`save_layout_model` / :func:`load_layout_model`). Every random choice comes from the
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..atomic import write_text_atomic
from ..errors import CosynthError, require_file
from ..records import Layout, Provenance
from ..taxonomy import Taxonomy

MODEL_FORMAT = "wsi-cosynth-layout-model"
MODEL_VERSION = 2
_MAX_CELLS = 4_000_000  # field grid cells per sample; bounds memory for whole regions


@dataclass(frozen=True)
class Compartment:
    """One tissue compartment: area fraction, field offset ``b_m``, density (px^-2), class mix (K,)."""

    area_fraction: float
    offset: float
    density_per_px2: float
    class_probs: tuple[float, ...]


@dataclass(frozen=True)
class LayoutModel:
    """Parameters of the compartment Cox process with scaled hard core (see the module docstring)."""

    taxonomy: Taxonomy
    tissue: str | None
    mpp: float | None
    compartments: tuple[Compartment, ...]
    length_compartment_px: float
    hardcore_px: tuple[tuple[float, ...], ...]
    spacing_kappa: float
    softness: float
    mark_coupling: float
    mark_radius_px: float
    mark_sweeps: int
    n_layouts: int

    @property
    def density_per_px2(self) -> float:
        """Mean nuclei per px^2 over the mosaic (area-weighted compartment densities)."""
        return float(sum(c.area_fraction * c.density_per_px2 for c in self.compartments))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["taxonomy"] = self.taxonomy.to_dict()
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "layout model") -> "LayoutModel":
        if not isinstance(d, dict):
            raise CosynthError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != MODEL_FORMAT or d.get("version") != MODEL_VERSION:
            hint = " (refit it with `wsi-cosynth layouts fit`)" if d.get("format") == MODEL_FORMAT else ""
            raise CosynthError(
                f"{where}: expected format {MODEL_FORMAT!r} version {MODEL_VERSION}, "
                f"found {d.get('format')!r} version {d.get('version')!r}{hint}"
            )
        try:
            tax = Taxonomy.from_dict(d["taxonomy"], where=where)
            k = tax.n_classes
            hc = tuple(tuple(float(v) for v in row) for row in d["hardcore_px"])
            if len(hc) != k or any(len(r) != k for r in hc):
                raise ValueError(f"hardcore_px is not {k} x {k} (the classes of the taxonomy)")
            comps = tuple(
                Compartment(float(c["area_fraction"]), float(c["offset"]), float(c["density_per_px2"]),
                            tuple(float(v) for v in c["class_probs"]))
                for c in d["compartments"]
            )
            if not comps or any(len(c.class_probs) != k for c in comps):
                raise ValueError(f"compartments must be a non-empty list with {k} class_probs each")
            if any(c.density_per_px2 < 0 or c.area_fraction < 0 for c in comps):
                raise ValueError("compartment densities and area fractions must be >= 0")
            model = cls(
                taxonomy=tax, tissue=d.get("tissue"), mpp=d.get("mpp"), compartments=comps,
                length_compartment_px=float(d["length_compartment_px"]), hardcore_px=hc,
                spacing_kappa=float(d["spacing_kappa"]), softness=float(d["softness"]),
                mark_coupling=float(d["mark_coupling"]), mark_radius_px=float(d["mark_radius_px"]),
                mark_sweeps=int(d["mark_sweeps"]), n_layouts=int(d["n_layouts"]),
            )
            _check_ranges(model)
            return model
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CosynthError(f"{where}: malformed layout model: {exc}") from None


def _check_ranges(model: LayoutModel) -> None:
    """ValueError unless every parameter is finite and in the range a tile layout can have."""
    numbers = [model.length_compartment_px, model.spacing_kappa, model.softness, model.mark_coupling,
               model.mark_radius_px, *(v for row in model.hardcore_px for v in row)]
    for c in model.compartments:
        numbers += [c.area_fraction, c.offset, c.density_per_px2, *c.class_probs]
    if not all(math.isfinite(v) and abs(v) <= 1e6 for v in numbers):
        raise ValueError("parameters must be finite numbers of at most 1e6 in size")
    if any(c.density_per_px2 > 1.0 for c in model.compartments):
        raise ValueError("a density above 1 nucleus per pixel is not a nuclei layout")
    if any(min(c.class_probs) < 0 or sum(c.class_probs) <= 0 for c in model.compartments):
        raise ValueError("class_probs must be >= 0 with a positive sum")
    if not 0 <= model.mark_sweeps <= 10_000 or model.n_layouts < 0:
        raise ValueError("mark_sweeps must be in 0..10000 and n_layouts >= 0")
    if model.mpp is not None and not (isinstance(model.mpp, (int, float)) and 0 < model.mpp < 1e3):
        raise ValueError(f"mpp must be a positive number, got {model.mpp!r}")
    if model.tissue is not None and not isinstance(model.tissue, str):
        raise ValueError(f"tissue must be a string, got {model.tissue!r}")


def save_layout_model(model: LayoutModel, path: str | Path) -> None:
    """Write ``model`` as JSON (atomically)."""
    write_text_atomic(path, json.dumps(model.to_dict(), indent=1))


def load_layout_model(path: str | Path) -> LayoutModel:
    """Read a model written by :func:`save_layout_model`; CosynthError naming the file otherwise."""
    p = require_file(path, "layout model")
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CosynthError(f"layout model {p} is not readable JSON: {exc}") from None
    return LayoutModel.from_dict(d, where=f"layout model {p}")


# ------------------------------------------------------------------------------------ fields
def _unit_field(shape: tuple[int, int], sigma_cells: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance stationary Gaussian field on a grid (Gaussian-filtered white noise).

    The variance is normalised analytically (sum of squared kernel weights), NOT by the sample
    variance, so small windows keep the between-window variation of a large field.
    """
    s = max(float(sigma_cells), 0.5)
    pad = int(np.ceil(3 * s))
    noise = rng.standard_normal((shape[0] + 2 * pad, shape[1] + 2 * pad)).astype(np.float32)
    field = ndimage.gaussian_filter(noise, s, mode="wrap")[pad:pad + shape[0], pad:pad + shape[1]]
    delta = np.zeros((2 * pad + 1, 2 * pad + 1), dtype=np.float64)
    delta[pad, pad] = 1.0
    norm = float(np.sqrt((ndimage.gaussian_filter(delta, s, mode="constant") ** 2).sum()))
    return field / np.float32(norm)


def _field_on_grid(shape: tuple[int, int], cell_px: float, length_px: float, rng: np.random.Generator) -> np.ndarray:
    """Unit field of correlation length ``length_px`` on a grid of ``cell_px`` cells.

    Smooth fields are drawn on their own coarse grid (4 cells per length) and interpolated
    bilinearly: a field at 128 px does not need 4 px cells.
    """
    coarse = max(cell_px, length_px / 4)
    if coarse <= cell_px:
        return _unit_field(shape, length_px / cell_px, rng)
    cshape = (int(np.ceil(shape[0] * cell_px / coarse)) + 2, int(np.ceil(shape[1] * cell_px / coarse)) + 2)
    z = _unit_field(cshape, length_px / coarse, rng)
    rows = (np.arange(shape[0]) + 0.5) * cell_px / coarse
    cols = (np.arange(shape[1]) + 0.5) * cell_px / coarse
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(z, [rr, cc], order=1, mode="nearest").astype(np.float32)


def compartment_mosaic(offsets: np.ndarray, shape: tuple[int, int], cell_px: float, length_px: float,
                       rng: np.random.Generator) -> np.ndarray:
    """(gh, gw) int compartment index ``argmax_m (offsets[m] + Z_m)`` on a grid of ``cell_px`` cells."""
    z = np.stack([off + _field_on_grid(shape, cell_px, length_px, rng) for off in offsets])
    return z.argmax(axis=0)


def _cell_size(size: tuple[int, int]) -> float:
    h, w = size
    # 4 px cells resolve well under a nucleus spacing; larger regions get coarser cells so the
    # grid never exceeds _MAX_CELLS (the memory bound wins for whole-slide regions).
    return max(4.0, float(np.ceil(np.sqrt(h * w / _MAX_CELLS))))


@dataclass
class _Fields:
    cell_px: float
    label: np.ndarray  # (gh, gw) compartment index
    intensity: np.ndarray  # (gh, gw) points per px^2
    class_logits: np.ndarray  # (K, gh, gw)


def _fields(model: LayoutModel, size: tuple[int, int], rng: np.random.Generator) -> _Fields:
    h, w = size
    g = _cell_size(size)
    shape = (int(np.ceil(h / g)), int(np.ceil(w / g)))
    comps = model.compartments
    label = compartment_mosaic(np.array([c.offset for c in comps]), shape, g, model.length_compartment_px, rng)
    intensity = np.array([c.density_per_px2 for c in comps])[label]
    log_p = np.log(np.maximum(np.array([c.class_probs for c in comps]), 1e-6))  # (M, K)
    logits = np.moveaxis(log_p[label], -1, 0).astype(np.float32)  # (K, gh, gw)
    return _Fields(g, label, intensity, logits)


# ------------------------------------------------------------------------------------ sampling
def _rsa(fields: _Fields, size: tuple[int, int], n_target: int, model: LayoutModel,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential adsorption of ``n_target`` points drawn from the fields (see docstring)."""
    h, w = size
    g = fields.cell_px
    gh, gw = fields.intensity.shape
    hardcore = np.asarray(model.hardcore_px, dtype=np.float64)
    # Cells beyond the window edge are only partly inside: weight by the inside area.
    cw = np.minimum(g, w - np.arange(gw) * g)
    ch = np.minimum(g, h - np.arange(gh) * g)
    p = (fields.intensity * ch[:, None] * cw[None, :]).ravel()
    if n_target == 0 or p.sum() <= 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    p = p / p.sum()
    core_cell = model.spacing_kappa / np.sqrt(np.maximum(fields.intensity.ravel(), 1e-12))
    logits = fields.class_logits.reshape(len(fields.class_logits), -1)
    r_max = max(float(hardcore.max()), float(core_cell[p > 0].max()))
    xy_acc = np.zeros((0, 2))
    cls_acc = np.zeros(0, dtype=np.int64)
    budget = 30 * n_target + 100  # saturation guard: a dense target may be unreachable
    drawn = 0
    while len(cls_acc) < n_target and drawn < budget:
        m = int(min(budget - drawn, max(64, 2 * (n_target - len(cls_acc)))))
        drawn += m
        cell = rng.choice(len(p), size=m, p=p)
        r, c = np.divmod(cell, gw)
        x = np.minimum(np.minimum((c + rng.random(m)) * g, c * g + cw[c]), np.nextafter(w, 0))
        y = np.minimum(np.minimum((r + rng.random(m)) * g, r * g + ch[r]), np.nextafter(h, 0))
        lg = logits[:, cell].T.astype(np.float64)
        prob = np.exp(lg - lg.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        u = rng.random(m)[:, None]
        cls = (u > np.cumsum(prob, axis=1)).sum(axis=1).clip(0, prob.shape[1] - 1) + 1
        cand = np.stack([x, y], axis=1)
        # Soft core: a candidate that violates only the scaled core survives with prob. softness.
        soft_ok = rng.random(m) < model.softness
        core = core_cell[cell]
        ok = np.ones(m, dtype=bool)
        if len(cls_acc) and r_max > 0:
            dist, idx = cKDTree(xy_acc).query(cand, k=min(8, len(cls_acc)), distance_upper_bound=r_max)
            dist, idx = dist.reshape(m, -1), idx.reshape(m, -1)
            valid = np.isfinite(dist)
            other = np.where(valid, cls_acc[np.minimum(idx, len(cls_acc) - 1)], 1)
            ok &= ~(valid & (dist < hardcore[cls[:, None] - 1, other - 1])).any(axis=1)
            ok &= soft_ok | ~(valid & (dist < core[:, None])).any(axis=1)
        # Within the batch: keep candidates in draw order, skipping any that conflict with an
        # earlier kept one.
        keep = np.zeros(m, dtype=bool)
        nbrs = cKDTree(cand).query_ball_point(cand, r_max) if r_max > 0 else None
        n_kept = len(cls_acc)
        for i in np.flatnonzero(ok):
            if n_kept >= n_target:
                break
            if nbrs is not None:
                js = [j for j in nbrs[i] if j < i and keep[j]]
                if js:
                    dj = np.hypot(*(cand[js] - cand[i]).T)
                    if (dj < hardcore[cls[i] - 1, cls[js] - 1]).any() or (not soft_ok[i] and (dj < core[i]).any()):
                        continue
            keep[i] = True
            n_kept += 1
        xy_acc = np.concatenate([xy_acc, cand[keep]])
        cls_acc = np.concatenate([cls_acc, cls[keep]])
    return xy_acc, cls_acc


def _potts_marks(xy: np.ndarray, cls: np.ndarray, log_p: np.ndarray, model: LayoutModel,
                 rng: np.random.Generator) -> np.ndarray:
    """Gibbs sweeps of the auto-logistic class model (step 3 of the module docstring).

    ``log_p`` (N, K): log class mix of each point's compartment. A class that would break the
    class-pair hard core with a neighbour is not allowed; the current class always is.
    """
    n = len(cls)
    if n < 2 or model.mark_coupling == 0 or model.mark_sweeps == 0:
        return cls
    hardcore = np.asarray(model.hardcore_px, dtype=np.float64)
    radius = max(model.mark_radius_px, float(hardcore.max()))
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return cls
    i2 = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j2 = np.concatenate([pairs[:, 1], pairs[:, 0]])
    d2 = np.hypot(*(xy[i2] - xy[j2]).T)
    order = np.argsort(i2, kind="stable")
    i2, j2, d2 = i2[order], j2[order], d2[order]
    bounds = np.searchsorted(i2, np.arange(n + 1))
    in_mark = d2 < model.mark_radius_px
    k = log_p.shape[1]
    cls = cls.copy()
    for _ in range(model.mark_sweeps):
        u = rng.random(n)
        for i in rng.permutation(n):
            lo, hi = bounds[i], bounds[i + 1]
            if lo == hi:
                continue
            nb = cls[j2[lo:hi]]
            energy = log_p[i] + model.mark_coupling * np.bincount(nb[in_mark[lo:hi]] - 1, minlength=k)
            # (K, n_nb) hard-core check of every candidate class against the neighbours.
            bad = (d2[lo:hi][None, :] < hardcore[:, nb - 1]).any(axis=1)
            bad[cls[i] - 1] = False
            prob = np.where(bad, 0.0, np.exp(energy - energy.max()))
            cls[i] = int(np.searchsorted(np.cumsum(prob), u[i] * prob.sum(), side="right")) + 1
            cls[i] = min(cls[i], k)
    return cls


def sample_layout(
    model: LayoutModel, size: tuple[int, int], rng: np.random.Generator, *, name: str = "sample"
) -> Layout:
    """One new layout of ``size`` (H, W) px (a tile or a whole region) from ``model``."""
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise CosynthError(f"layout size must be positive (height, width), got {size!r}")
    fields = _fields(model, (h, w), rng)
    g = fields.cell_px
    gh, gw = fields.intensity.shape
    cw = np.minimum(g, w - np.arange(gw) * g)
    ch = np.minimum(g, h - np.arange(gh) * g)
    mean_count = float((fields.intensity * ch[:, None] * cw[None, :]).sum())
    n = int(rng.poisson(mean_count))
    xy, cls = _rsa(fields, (h, w), n, model, rng)
    if len(cls):
        cell = (np.minimum((xy[:, 1] // g).astype(int), gh - 1), np.minimum((xy[:, 0] // g).astype(int), gw - 1))
        log_p = np.log(np.maximum(np.array([c.class_probs for c in model.compartments]), 1e-6))
        cls = _potts_marks(xy, cls, log_p[fields.label[cell]], model, rng)
    return Layout(xy_tile=xy, classes=cls, size=(h, w), taxonomy=model.taxonomy,
                  provenance=Provenance(name=name, mpp=model.mpp, tissue=model.tissue))


def sample_layouts(
    model: LayoutModel, n: int, size: tuple[int, int], rng: np.random.Generator, *, prefix: str = "sample"
) -> list[Layout]:
    """``n`` independent layouts of ``size`` (H, W), named ``<prefix>_<i>``."""
    if n < 0:
        raise CosynthError(f"number of layouts must be >= 0, got {n}")
    width = max(len(str(max(n - 1, 0))), 4)
    return [sample_layout(model, size, rng, name=f"{prefix}_{i:0{width}d}") for i in range(n)]
