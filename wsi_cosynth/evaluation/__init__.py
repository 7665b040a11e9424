"""Evaluate synthetic tiles against real ones: FID, KID, IS, FSD, label-image agreement, layouts.

``evaluate_sets(real_tiles, synthetic_tiles, ...) -> dict`` works on any iterables of
:class:`~wsi_cosynth.records.LabelledTile`; ``evaluate_datasets(...)`` reads two datasets from
disk and writes a report directory (what ``wsi-cosynth evaluate`` runs).
"""

from .datasets import evaluate_datasets
from .runner import SetSummary, compare_sets, evaluate_sets, summarize_set

__all__ = ["SetSummary", "compare_sets", "evaluate_datasets", "evaluate_sets", "summarize_set"]
