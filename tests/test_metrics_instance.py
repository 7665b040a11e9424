"""Instance metrics: hand-built cases with known values and agreement with a slow reference."""

import numpy as np
import pytest

from wsi_cosynth.errors import CosynthError
from wsi_cosynth.metrics.instance_metrics import (
    aji, aji_plus, dice, instance_stats, mean_instance_dice, panoptic_quality,
)


def two_squares():
    t = np.zeros((12, 12), np.int32)
    t[1:5, 1:5] = 1   # 16 px
    t[6:10, 6:10] = 2  # 16 px
    return t


def test_perfect():
    t = two_squares()
    s = instance_stats(t, t * 7)  # ids need not match
    assert s["aji"] == s["aji_plus"] == s["pq"] == s["mdice"] == s["dice"] == 1.0


def test_merged():
    t = two_squares()
    p = (t > 0).astype(np.int32)
    assert aji(t, p) == pytest.approx(32 / 64)      # both pair with the blob, union counted twice
    assert aji_plus(t, p) == pytest.approx(16 / 48)  # one pair + the unpaired true nucleus
    assert mean_instance_dice(t, p) == pytest.approx(2 * 16 / 48)
    q = panoptic_quality(t, p)
    assert (q.tp, q.fp, q.fn, q.pq) == (0, 1, 2, 0.0)  # IoU 0.5 is not > 0.5


def test_split():
    t = np.zeros((10, 10), np.int32)
    t[2:6, 2:8] = 1  # 24 px
    p = np.zeros_like(t)
    p[2:6, 2:5] = 1
    p[2:6, 5:8] = 2
    assert aji(t, p) == pytest.approx(12 / (24 + 12))
    assert aji_plus(t, p) == pytest.approx(12 / 36)
    assert mean_instance_dice(t, p) == pytest.approx(24 / 36)
    assert panoptic_quality(t, p).tp == 0


def test_shifted_and_missing():
    t = two_squares()
    p = np.zeros_like(t)
    p[1:5, 2:6] = 1  # nucleus 1 shifted by one column; nucleus 2 missing
    iou = 12 / 20
    q = panoptic_quality(t, p)
    assert (q.tp, q.fp, q.fn) == (1, 0, 1)
    assert q.dq == pytest.approx(1 / 1.5)
    assert q.sq == pytest.approx(iou)
    assert aji(t, p) == pytest.approx(12 / (20 + 16))
    assert mean_instance_dice(t, p) == pytest.approx((2 * 12 / 32 + 0) / 2)
    assert dice(t, p) == pytest.approx(2 * 12 / 48)


def test_empty_maps():
    z = np.zeros((5, 5), np.int32)
    assert instance_stats(z, z)["pq"] == 1.0
    one = z.copy()
    one[1, 1] = 1
    assert aji(z, one) == 0.0 and aji(one, z) == 0.0 and panoptic_quality(one, z).pq == 0.0


def test_bad_input():
    with pytest.raises(CosynthError, match="shape"):
        aji(np.zeros((3, 3), int), np.zeros((4, 3), int))
    with pytest.raises(CosynthError, match="integer"):
        aji(np.zeros((3, 3)), np.zeros((3, 3), int))


# ---------------------------------------------------------------- slow reference implementation
def ref_metrics(true, pred):
    """Dense, loop-based restatement of HoVer-Net's get_fast_aji / aji_plus / pq."""
    from scipy.optimize import linear_sum_assignment

    t_ids = [i for i in np.unique(true) if i]
    p_ids = [i for i in np.unique(pred) if i]
    inter = np.zeros((len(t_ids), len(p_ids)))
    union = np.zeros_like(inter)
    for a, ti in enumerate(t_ids):
        tm = true == ti
        for b, pi in enumerate(p_ids):
            pm = pred == pi
            inter[a, b] = (tm & pm).sum()
            union[a, b] = (tm | pm).sum()
    iou = inter / np.maximum(union, 1)
    t_area = [(true == i).sum() for i in t_ids]
    p_area = [(pred == i).sum() for i in p_ids]

    def agg(pairs):
        pt = {a for a, _ in pairs}
        pp = {b for _, b in pairs}
        i = sum(inter[a, b] for a, b in pairs)
        u = sum(union[a, b] for a, b in pairs)
        u += sum(t_area[a] for a in range(len(t_ids)) if a not in pt)
        u += sum(p_area[b] for b in range(len(p_ids)) if b not in pp)
        return i / u

    best = [(a, int(np.argmax(iou[a]))) for a in range(len(t_ids)) if iou[a].max() > 0]
    r, c = linear_sum_assignment(-iou)
    hung = [(a, b) for a, b in zip(r, c) if iou[a, b] > 0]
    m = [(a, b) for a in range(len(t_ids)) for b in range(len(p_ids)) if iou[a, b] > 0.5]
    tp = len(m)
    dq = tp / (tp + 0.5 * (len(p_ids) - tp) + 0.5 * (len(t_ids) - tp))
    sq = np.mean([iou[a, b] for a, b in m]) if m else 0.0
    return agg(best), agg(hung), dq * sq


def random_instances(rng, shape=(40, 40), n=12):
    """Random overlapping discs painted in order: touching, occluded, fragmented nuclei."""
    out = np.zeros(shape, np.int32)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    for i in range(1, n + 1):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(2, 7)
        out[(rr - y) ** 2 + (cc - x) ** 2 <= r * r] = i
    return out


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_reference(seed):
    rng = np.random.default_rng(seed)
    t = random_instances(rng)
    p = random_instances(rng) if seed % 2 else np.roll(t, (1, 2), axis=(0, 1))
    ref_aji, ref_aji_plus, ref_pq = ref_metrics(t, p)
    assert aji(t, p) == pytest.approx(ref_aji, abs=1e-9)
    assert aji_plus(t, p) == pytest.approx(ref_aji_plus, abs=1e-9)
    assert panoptic_quality(t, p).pq == pytest.approx(ref_pq, abs=1e-9)


def test_thousands_of_nuclei_fast():
    t = np.zeros((600, 600), np.int32)
    k = 0
    for r in range(0, 600, 10):
        for c in range(0, 600, 10):
            k += 1
            t[r:r + 8, c:c + 8] = k
    assert k == 3600
    s = instance_stats(t, np.roll(t, 1, axis=1))
    assert s["pq"] > 0 and s["dq"] == 1.0  # IoU 56/72 > 0.5 for every nucleus
