"""Downstream benchmark: does synthetic data help a nuclei segmenter?

Three arms train the same reference segmenter (:mod:`.segmenter`, one :class:`SegmenterConfig`:
same network, step budget, seeds and augmentation) and differ ONLY in their training tiles:

- ``real_only``: the real training tiles;
- ``real_plus_synthetic``: the real tiles plus synthetic ones (``ratio`` synthetic per real tile);
- ``synthetic_only``: the synthetic tiles alone.

Synthetic tiles are co-synthesised by a model from the real training tiles' layouts and from new
layouts resampled from a point process fitted on them (``resampled_share`` of them), each layout
``per_layout`` times. Every arm is scored on the same held-out test tiles: Dice, AJI, PQ (DQ, SQ),
each a mean over test tiles, and HoVer-Net's per-class F1 of nuclei paired within 12 px.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import CosynthError
from ..instances import instance_centroids
from ..records import LabelledTile, Layout
from ..taxonomy import Taxonomy
from ..detection.segmenter import SegmenterConfig, predict_instances, train_segmenter

ARMS = ("real_only", "real_plus_synthetic", "synthetic_only")
PAIR_RADIUS_PX = 12.0  # HoVer-Net's detection pairing radius at 40x (compute_stats.py)


@dataclass(frozen=True)
class SyntheticPlan:
    """How many synthetic tiles to make and from which layouts.

    ratio : synthetic tiles per real training tile.
    resampled_share : share of the synthetic tiles whose layouts are resampled (the rest use the
        real tiles' own layouts).
    per_layout : synthetic tiles per layout (different noise).
    steps, guidance, sampler : sampling settings; None: the model's own.
    """

    ratio: float = 1.0
    resampled_share: float = 0.5
    per_layout: int = 1
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    seed: int = 0
    tissue: str | None = None

    def __post_init__(self) -> None:
        if not self.ratio > 0:
            raise CosynthError(f"synthetic ratio must be > 0, got {self.ratio}")
        if not 0.0 <= self.resampled_share <= 1.0:
            raise CosynthError(f"resampled share must be in [0, 1], got {self.resampled_share}")
        if self.per_layout < 1:
            raise CosynthError(f"synthetic tiles per layout must be >= 1, got {self.per_layout}")


@dataclass(frozen=True)
class Arm:
    """One arm: its name, its training tiles and the segmenter settings (shared by all arms)."""

    name: str
    tiles: tuple[LabelledTile, ...]
    config: SegmenterConfig


def plan_layouts(real: Sequence[LabelledTile], plan: SyntheticPlan, *, layout_model=None) -> list[Layout]:
    """The layouts to synthesise from (each to be sampled ``plan.per_layout`` times).

    ``round(ratio * len(real) / per_layout)`` layouts: a seeded choice of the real tiles' layouts
    (cycling when more are needed) and ``resampled_share`` of them drawn from ``layout_model``
    (default: a layout model fitted on all real training layouts).
    """
    from ..layouts import layout_from_tile
    from ..layouts.fit import fit_layout_model
    from ..layouts.point_process import sample_layouts

    if not real:
        raise CosynthError("no real training tiles to take layouts from")
    rng = np.random.default_rng(plan.seed)
    n_layouts = max(1, round(plan.ratio * len(real) / plan.per_layout))
    n_resampled = round(plan.resampled_share * n_layouts)
    own = [layout_from_tile(t) for t in real]
    order = np.concatenate([rng.permutation(len(own)) for _ in range(-(-(n_layouts - n_resampled) // len(own)) or 1)])
    chosen = [own[int(i)] for i in order[: n_layouts - n_resampled]]
    if n_resampled:
        model = layout_model if layout_model is not None else fit_layout_model(own, rng)
        chosen += sample_layouts(model, n_resampled, tuple(real[0].size), rng, prefix="resampled")
    if plan.tissue is not None:
        chosen = [lay.with_tissue(plan.tissue) for lay in chosen]
    return chosen


CHUNK_LAYOUTS = 32  # layouts co-synthesised (and, with a chunk directory, kept) per chunk


def synthesize_training_tiles(model, real: Sequence[LabelledTile], plan: SyntheticPlan, *, batch_size: int = 4,
                              chunk_dir: Path | None = None) -> list[LabelledTile]:
    """Co-synthesise the synthetic training tiles of ``plan`` with ``model`` (a CosynthModel).

    Layouts are made CHUNK_LAYOUTS at a time, each chunk from its own seed (derived from the
    plan's seed, the repeat and the chunk index), so the tiles do not depend on where a run
    stopped. With ``chunk_dir`` every chunk is kept there as a Lizard dataset as soon as it is
    made and read back on the next call: an interrupted synthesis (hours on a CPU) resumes at the
    first missing chunk instead of starting again.
    """
    from ..api import synthesize
    from ..exporters import open_writer, read_dataset
    from ..pipeline.jobs import batch_seed

    layouts = plan_layouts(real, plan)
    tiles: list[LabelledTile] = []
    for k in range(plan.per_layout):
        for c, start in enumerate(range(0, len(layouts), CHUNK_LAYOUTS)):
            part = None if chunk_dir is None else Path(chunk_dir) / f"repeat{k:02d}-chunk{c:04d}"
            if part is not None and (part / "info.csv").is_file():
                tiles += read_dataset(part, "lizard", taxonomy=model.taxonomy)
                continue
            made = synthesize(layouts[start:start + CHUNK_LAYOUTS], model, steps=plan.steps, guidance=plan.guidance,
                              sampler=plan.sampler, seed=batch_seed(plan.seed + 1000 * k, c), batch_size=batch_size)
            if part is not None:
                with open_writer("lizard", part, model.taxonomy, overwrite=True) as writer:  # atomic: whole or absent
                    for tile in made:
                        writer.add(tile)
            tiles += made
    return tiles


def build_arms(
    real: Sequence[LabelledTile], synthetic: Sequence[LabelledTile], config: SegmenterConfig,
    names: Sequence[str] = ARMS,
) -> list[Arm]:
    """The arms ``names`` (in ARMS order) over the same segmenter config; only their tiles differ."""
    unknown = sorted(set(names) - set(ARMS))
    if unknown:
        raise CosynthError(f"unknown arm(s) {unknown}; the arms are {list(ARMS)}")
    parts = {"real_only": (real,), "real_plus_synthetic": (real, synthetic), "synthetic_only": (synthetic,)}
    wanted = [name for name in ARMS if name in names]
    if any(not part for name in wanted for part in parts[name]):
        raise CosynthError(f"need real and synthetic training tiles, got {len(real)} and {len(synthetic)}")
    return [Arm(name, tuple(t for part in parts[name] for t in part), config) for name in wanted]


@dataclass
class DetectionCounts:
    """Paired and unpaired nuclei over a test set, as HoVer-Net's ``compute_stats`` collects them."""

    paired_true: list[np.ndarray]
    paired_pred: list[np.ndarray]
    unpaired_true: list[np.ndarray]
    unpaired_pred: list[np.ndarray]

    @classmethod
    def empty(cls) -> "DetectionCounts":
        return cls([], [], [], [])

    def add(self, true_xy: np.ndarray, true_cls: np.ndarray, pred_xy: np.ndarray, pred_cls: np.ndarray,
            radius: float = PAIR_RADIUS_PX) -> None:
        """Pair nuclei one-to-one by centroid distance (Hungarian) within ``radius`` pixels."""
        from scipy.optimize import linear_sum_assignment
        from scipy.spatial.distance import cdist

        ti = np.zeros(0, int)
        pi = np.zeros(0, int)
        if len(true_xy) and len(pred_xy):
            d = cdist(true_xy, pred_xy)
            ti, pi = linear_sum_assignment(d)
            ok = d[ti, pi] <= radius
            ti, pi = ti[ok], pi[ok]
        self.paired_true.append(true_cls[ti])
        self.paired_pred.append(pred_cls[pi])
        self.unpaired_true.append(np.delete(true_cls, ti))
        self.unpaired_pred.append(np.delete(pred_cls, pi))

    def f1(self, classes: Sequence[int]) -> tuple[float, dict[int, float]]:
        """Detection F1 and per-class F1 (HoVer-Net: F_c = 2(TP_c + TN_c) / (2(TP_c + TN_c) +
        2 FP_c + 2 FN_c + FP_d,c + FN_d,c) over paired nuclei, unpaired ones of class c counting once)."""
        pt, pp = np.concatenate(self.paired_true), np.concatenate(self.paired_pred)
        ut, up = np.concatenate(self.unpaired_true), np.concatenate(self.unpaired_pred)
        tp_d, fp_d, fn_d = len(pt), len(up), len(ut)
        detection = 2 * tp_d / max(2 * tp_d + fp_d + fn_d, 1)
        per_class = {}
        for c in classes:
            tp = int(((pt == c) & (pp == c)).sum())
            tn = int(((pt != c) & (pp != c)).sum())
            fp = int(((pt != c) & (pp == c)).sum())
            fn = int(((pt == c) & (pp != c)).sum())
            num = 2 * (tp + tn)
            den = num + 2 * fp + 2 * fn + int((up == c).sum()) + int((ut == c).sum())
            per_class[int(c)] = num / den if den else float("nan")
        return detection, per_class


def score_segmenter(net, test: Sequence[LabelledTile], taxonomy: Taxonomy, *, h: float) -> dict:
    """Dice, AJI, PQ, DQ, SQ (means over tiles) and F1 (detection and per class) on ``test``."""
    from ..metrics.instance_metrics import aji, dice, panoptic_quality

    per_tile = {"dice": [], "aji": [], "pq": [], "dq": [], "sq": []}
    counts = DetectionCounts.empty()
    for tile in test:
        inst, cls = predict_instances(net, tile.image, h=h)
        pq = panoptic_quality(tile.instances, inst)
        per_tile["dice"].append(dice(tile.instances, inst))
        per_tile["aji"].append(aji(tile.instances, inst))
        per_tile["pq"].append(pq.pq)
        per_tile["dq"].append(pq.dq)
        per_tile["sq"].append(pq.sq)
        txy, pxy = instance_centroids(tile.instances), instance_centroids(inst)
        tk, pk = ~np.isnan(txy[:, 0]), ~np.isnan(pxy[:, 0])
        counts.add(txy[tk], np.asarray(tile.classes)[tk], pxy[pk], np.asarray(cls)[pk])
    detection, per_class = counts.f1(range(1, taxonomy.n_classes + 1))
    out = {k: float(np.mean(v)) for k, v in per_tile.items()}
    out["f1_detection"] = detection
    out["f1_classes"] = {taxonomy.name_of(c): f for c, f in per_class.items()}
    return out


def run_arm(arm: Arm, test: Sequence[LabelledTile], taxonomy: Taxonomy, *, seeds: int = 1) -> dict:
    """Train and score ``arm`` once per seed (seed, seed + 1, ...); the mean of each score, and PQ per seed."""
    runs = []
    for k in range(seeds):
        config = replace(arm.config, seed=arm.config.seed + k)
        net = train_segmenter(arm.tiles, taxonomy.n_classes, config)
        runs.append(score_segmenter(net, test, taxonomy, h=config.h))
    out = {key: float(np.mean([r[key] for r in runs])) for key in runs[0] if key != "f1_classes"}
    out["f1_classes"] = {name: float(np.nanmean([r["f1_classes"][name] for r in runs])) for name in runs[0]["f1_classes"]}
    out["n_train_tiles"] = len(arm.tiles)
    out["seeds"] = seeds
    out["pq_per_seed"] = [float(r["pq"]) for r in runs]  # the spread says how much a difference means
    return out
