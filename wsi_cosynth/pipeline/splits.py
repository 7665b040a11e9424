"""Patient-level train/val/test splits of a cohort: seeded, stratified by tissue where the
counts allow, fixed assignments first.

A patient is never in two splits: splits are drawn over patients, and every slide goes where its
patient goes. The fractions are of ALL patients; patients with a fixed split count toward them.

1. Fixed: a patient the CSV gives a split keeps it.
2. Per tissue stratum (a patient's tissue types joined; "" when none), in sorted order: its free
   patients, shuffled, fill each split up to ``floor(fraction x patients of the stratum)``
   minus the fixed ones there, train first. So every stratum large enough gets its share.
3. What is left (strata too small for whole patients), shuffled, goes one patient at a time to
   the split furthest below its fraction of the whole cohort (ties drawn); a split with
   fraction 0 gets none.

Patients are sorted by name before each shuffle, so the rows' order in the CSV does not matter;
the same seed gives the same splits.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import CosynthError

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
_SPLIT_STREAM = 0x5B117  # keeps the split draw independent of the other uses of the seed


@dataclass(frozen=True)
class PatientInfo:
    """What the split needs to know of a patient: its stratum and its fixed split (if any)."""

    stratum: str
    fixed: str | None = None


def parse_fractions(value: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` (or a 3-sequence) -> (train, val, test); each >= 0, summing to 1."""
    text = value if isinstance(value, str) else ",".join(str(v) for v in value)
    try:
        parts = tuple(float(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(math.isfinite(v) and v >= 0 for v in parts) or abs(sum(parts) - 1) > 1e-6:
        raise CosynthError(f"--split must be three fractions train,val,test, each >= 0 and summing to 1 "
                           f"(e.g. 0.8,0.1,0.1), got {text!r}")
    return parts  # type: ignore[return-value]


def assign_splits(patients: Mapping[str, PatientInfo], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """The split of every patient (see the module docstring).

    Parameters
    ----------
    patients : patient id -> its stratum and fixed split.
    fractions : (train, val, test) fractions of all patients, summing to 1.
    seed : the draw's seed.

    Returns
    -------
    dict patient id -> "train", "val" or "test".
    """
    f = dict(zip(SPLITS, parse_fractions(fractions)))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _SPLIT_STREAM]))
    chosen = {p: info.fixed for p, info in patients.items() if info.fixed is not None}
    strata: dict[str, list[str]] = {}
    for p in sorted(patients):
        strata.setdefault(patients[p].stratum, []).append(p)
    leftovers: list[str] = []
    for stratum in sorted(strata):
        members = strata[stratum]
        fixed_here = Counter(chosen[p] for p in members if p in chosen)
        free = [members[i] for i in rng.permutation(len(members)) if members[i] not in chosen]
        for split in SPLITS:
            share = max(0, math.floor(f[split] * len(members) + 1e-9) - fixed_here[split])
            take, free = free[:share], free[share:]
            chosen.update((p, split) for p in take)
        leftovers += free
    counts = Counter(chosen.values())
    open_splits = [s for s in SPLITS if f[s] > 0]
    for i in rng.permutation(len(leftovers)):
        # Deficit: how far the split is below its fraction of the whole cohort; equal deficits
        # (val and test at equal fractions) are drawn, so neither is always served last.
        deficit = {s: f[s] * len(patients) - counts[s] for s in open_splits}
        top = max(deficit.values())
        tied = [s for s in open_splits if deficit[s] >= top - 1e-9]
        split = tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]
        chosen[leftovers[i]] = split
        counts[split] += 1
    return chosen


def patient_strata(tissues: Mapping[str, set[str]]) -> dict[str, str]:
    """A patient's stratum: its slides' tissue types, sorted and joined with '+' ("" when none)."""
    return {p: "+".join(sorted(t)) for p, t in tissues.items()}
