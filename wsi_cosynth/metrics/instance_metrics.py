"""Instance segmentation metrics with HoVer-Net's definitions (``compute_stats``).

Definitions (Graham et al. 2019, HoVer-Net ``metrics/stats_utils.py``; true = ground truth):

- Dice (``get_dice_1``): binary Dice of the foregrounds, ``2|T & P| / (|T| + |P|)``.
- AJI (``get_fast_aji``): each true nucleus is paired with the prediction of highest IoU (a
  prediction may be used by several true nuclei; pairs with IoU 0 are dropped). AJI = sum of the
  pairs' intersections / (sum of the pairs' unions + areas of unpaired true nuclei + areas of
  predictions paired with none).
- AJI+ (``get_fast_aji_plus``): as AJI, but pairs are a maximum-IoU one-to-one assignment
  (Hungarian); pairs with IoU 0 dropped.
- PQ (``get_fast_pq``, match_iou 0.5): pairs are (true, pred) with IoU > 0.5 (unique by
  construction); DQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU of the pairs, PQ = DQ * SQ.
  (HoVer-Net divides SQ by ``TP + 1e-6``; we divide by TP exactly, a < 1e-6 relative difference.)
- mDice (per-instance mean Dice, the paper's instance-separation score): for each true nucleus,
  the Dice with its best-overlapping prediction (0 if none overlaps), averaged over true nuclei.

Empty maps (HoVer-Net divides by zero there): when both maps are empty every score is 1.0; when
exactly one is empty every score is 0.0.

All functions take two (H, W) integer instance maps (0 = background, any positive ids, need not
be contiguous) and work from one sparse overlap table, so thousands of nuclei are cheap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import CosynthError


@dataclass(frozen=True)
class Overlap:
    """Sparse overlap table of two instance maps (ids renumbered 0..Nt-1 and 0..Np-1).

    ``pair_true[k], pair_pred[k]`` overlap by ``inter[k]`` pixels, with IoU ``iou[k]``.
    """

    area_true: np.ndarray
    area_pred: np.ndarray
    pair_true: np.ndarray
    pair_pred: np.ndarray
    inter: np.ndarray

    @property
    def union(self) -> np.ndarray:
        return self.area_true[self.pair_true] + self.area_pred[self.pair_pred] - self.inter

    @property
    def iou(self) -> np.ndarray:
        return self.inter / self.union


@dataclass(frozen=True)
class PanopticQuality:
    """PQ = DQ * SQ with the matching counts (IoU > ``match_iou``)."""

    dq: float
    sq: float
    pq: float
    tp: int
    fp: int
    fn: int


def _validate(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(true), np.asarray(pred)
    if t.shape != p.shape or t.ndim != 2:
        raise CosynthError(f"true and pred must be (H, W) maps of one shape, got {t.shape} and {p.shape}")
    for name, a in (("true", t), ("pred", p)):
        if not np.issubdtype(a.dtype, np.integer):
            raise CosynthError(f"{name} must be an integer instance map, got dtype {a.dtype}")
        if a.size and int(a.min()) < 0:
            raise CosynthError(f"{name} has negative ids")
    return t.astype(np.int64, copy=False), p.astype(np.int64, copy=False)


def overlap_table(true: np.ndarray, pred: np.ndarray) -> Overlap:
    """Areas of every nucleus and intersections of every overlapping (true, pred) pair."""
    t, p = _validate(true, pred)
    t_ids, t_idx = np.unique(t, return_inverse=True)
    p_ids, p_idx = np.unique(p, return_inverse=True)
    t_idx, p_idx = t_idx.reshape(-1), p_idx.reshape(-1)
    # Shift so background (if present) is index -1 and nuclei are 0..N-1.
    t_idx = t_idx - int(t_ids[0] == 0)
    p_idx = p_idx - int(p_ids[0] == 0)
    nt, np_ = int((t_ids > 0).sum()), int((p_ids > 0).sum())
    area_t = np.bincount(t_idx[t_idx >= 0], minlength=nt).astype(np.int64)
    area_p = np.bincount(p_idx[p_idx >= 0], minlength=np_).astype(np.int64)
    both = (t_idx >= 0) & (p_idx >= 0)
    codes = t_idx[both] * max(np_, 1) + p_idx[both]
    pairs, inter = np.unique(codes, return_counts=True)
    return Overlap(area_t, area_p, pairs // max(np_, 1), pairs % max(np_, 1), inter.astype(np.int64))


def _empty_score(ov: Overlap) -> float | None:
    nt, np_ = len(ov.area_true), len(ov.area_pred)
    if nt == 0 and np_ == 0:
        return 1.0
    if nt == 0 or np_ == 0:
        return 0.0
    return None


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Binary foreground Dice (HoVer-Net ``get_dice_1``); 1.0 when both are empty."""
    t, p = _validate(true, pred)
    a, b = t > 0, p > 0
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


def _aji_from_pairs(ov: Overlap, pt: np.ndarray, pp: np.ndarray, inter: np.ndarray, union: np.ndarray) -> float:
    paired_t = np.zeros(len(ov.area_true), bool)
    paired_p = np.zeros(len(ov.area_pred), bool)
    paired_t[pt] = True
    paired_p[pp] = True
    total_union = float(union.sum()) + float(ov.area_true[~paired_t].sum()) + float(ov.area_pred[~paired_p].sum())
    return float(inter.sum()) / total_union


def aji(true: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (HoVer-Net ``get_fast_aji``)."""
    ov = overlap_table(true, pred)
    e = _empty_score(ov)
    if e is not None:
        return e
    if len(ov.inter) == 0:
        return 0.0
    iou = ov.iou
    # Best prediction per true nucleus: sort by (true, -iou, pred) and take the first row per true
    # (ties to the lowest prediction index, like numpy argmax over a dense row).
    order = np.lexsort((ov.pair_pred, -iou, ov.pair_true))
    first = order[np.r_[True, np.diff(ov.pair_true[order]) != 0]]
    return _aji_from_pairs(ov, ov.pair_true[first], ov.pair_pred[first], ov.inter[first], ov.union[first])


def _one_to_one(ov: Overlap) -> np.ndarray:
    """Indices into the pair list of a maximum-total-IoU one-to-one matching.

    Solved per connected component of the overlap graph, which gives the same optimum as one
    dense Hungarian problem but stays small for thousands of nuclei.
    """
    nt, np_ = len(ov.area_true), len(ov.area_pred)
    graph = coo_matrix((np.ones(len(ov.inter)), (ov.pair_true, nt + ov.pair_pred)), shape=(nt + np_, nt + np_))
    _, comp = connected_components(graph, directed=False)
    iou = ov.iou
    pair_comp = comp[ov.pair_true]
    chosen: list[np.ndarray] = []
    order = np.argsort(pair_comp, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(pair_comp[order]) != 0, True])
    for s, e in zip(bounds[:-1], bounds[1:]):
        k = order[s:e]
        if len(k) == 1:
            chosen.append(k)
            continue
        rows, ri = np.unique(ov.pair_true[k], return_inverse=True)
        cols, ci = np.unique(ov.pair_pred[k], return_inverse=True)
        mat = np.zeros((len(rows), len(cols)))
        mat[ri, ci] = iou[k]
        lookup = np.full((len(rows), len(cols)), -1, dtype=np.int64)
        lookup[ri, ci] = k
        r, c = linear_sum_assignment(-mat)
        sel = lookup[r, c]
        chosen.append(sel[sel >= 0])
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def aji_plus(true: np.ndarray, pred: np.ndarray) -> float:
    """AJI+ (HoVer-Net ``get_fast_aji_plus``): AJI over a one-to-one maximum-IoU matching."""
    ov = overlap_table(true, pred)
    e = _empty_score(ov)
    if e is not None:
        return e
    if len(ov.inter) == 0:
        return 0.0
    k = _one_to_one(ov)
    return _aji_from_pairs(ov, ov.pair_true[k], ov.pair_pred[k], ov.inter[k], ov.union[k])


def panoptic_quality(true: np.ndarray, pred: np.ndarray, *, match_iou: float = 0.5) -> PanopticQuality:
    """Panoptic quality (HoVer-Net ``get_fast_pq``); ``match_iou`` must be >= 0.5 (unique pairs)."""
    if not 0.5 <= match_iou < 1.0:
        raise CosynthError(f"match_iou must be in [0.5, 1) so that matches are unique, got {match_iou}")
    ov = overlap_table(true, pred)
    nt, np_ = len(ov.area_true), len(ov.area_pred)
    if nt == 0 and np_ == 0:
        return PanopticQuality(1.0, 1.0, 1.0, 0, 0, 0)
    iou = ov.iou if len(ov.inter) else np.zeros(0)
    matched = iou > match_iou
    tp = int(matched.sum())
    fp, fn = np_ - tp, nt - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(iou[matched].mean()) if tp else 0.0
    return PanopticQuality(dq, sq, dq * sq, tp, fp, fn)


def mean_instance_dice(true: np.ndarray, pred: np.ndarray) -> float:
    """mDice: mean over true nuclei of the Dice with their best-overlapping prediction (0 if none)."""
    ov = overlap_table(true, pred)
    e = _empty_score(ov)
    if e is not None:
        return e
    best = np.zeros(len(ov.area_true))
    if len(ov.inter):
        d = 2.0 * ov.inter / (ov.area_true[ov.pair_true] + ov.area_pred[ov.pair_pred])
        np.maximum.at(best, ov.pair_true, d)
    return float(best.mean())


def instance_stats(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """All scores of one pair of maps: dice, aji, aji_plus, dq, sq, pq, mdice (and tp/fp/fn)."""
    pq = panoptic_quality(true, pred)
    out: dict[str, float] = {
        "dice": dice(true, pred),
        "aji": aji(true, pred),
        "aji_plus": aji_plus(true, pred),
        "mdice": mean_instance_dice(true, pred),
    }
    out.update({k: float(v) for k, v in asdict(pq).items()})
    return out
