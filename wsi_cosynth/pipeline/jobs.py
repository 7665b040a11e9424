"""Synthesis jobs and their deterministic batching.

A job is one sample to make: a layout and its index ``k`` among the ``per_layout`` samples of
that layout. Jobs are cut into fixed batches in a fixed order, and every batch draws its noise
from a generator seeded by (run seed, batch index) alone. So the same command gives the same
files however the batches are scheduled: in-process, on N Dask workers, or resumed after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..colour import ColourStats
from ..errors import CosynthError
from ..records import Layout


@dataclass(frozen=True)
class SynthesisJob:
    """One sample: ``key`` names the output tile (unique in the run, no '-'); ``colour``: the
    colour statistics of the real tile it stands for, to match its image to (wsi_cosynth/colour.py)."""

    key: str
    layout: Layout
    colour: ColourStats | None = None


@dataclass(frozen=True)
class Batch:
    """Jobs synthesised together in one network batch, with the seed of their noise."""

    index: int
    seed: int
    jobs: tuple[SynthesisJob, ...]


def plan_jobs(layouts: list[Layout], per_layout: int,
              colours: dict[str, ColourStats] | None = None) -> list[SynthesisJob]:
    """``per_layout`` jobs per layout, keyed ``<layout name>_s<k>``, in layout order; ``colours``:
    colour references by layout name (layouts without one are not colour-matched)."""
    if per_layout < 1:
        raise CosynthError(f"--per-layout must be >= 1, got {per_layout}")
    names = [lay.provenance.name for lay in layouts]
    if len(set(names)) != len(names):
        raise CosynthError("layout names must be unique within a run (they name the output tiles)")
    jobs = []
    for lay in layouts:
        for k in range(per_layout):
            key = f"{lay.provenance.name}_s{k}"
            provenance = replace(lay.provenance, name=key)
            jobs.append(SynthesisJob(key, replace(lay, provenance=provenance),
                                     (colours or {}).get(lay.provenance.name)))
    return jobs


def batch_seed(seed: int, index: int) -> int:
    """A 63-bit seed for batch ``index`` of a run with ``seed`` (independent streams)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def make_batches(jobs: list[SynthesisJob], batch_size: int, seed: int) -> list[Batch]:
    """Consecutive runs of ``batch_size`` jobs (the last may be shorter)."""
    if batch_size < 1:
        raise CosynthError(f"--batch-size must be >= 1, got {batch_size}")
    return [
        Batch(i, batch_seed(seed, i), tuple(jobs[start : start + batch_size]))
        for i, start in enumerate(range(0, len(jobs), batch_size))
    ]
