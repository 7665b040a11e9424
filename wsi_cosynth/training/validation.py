"""Validation loss on held-out tiles: the training objective at fixed crops, steps and noise.

Every call evaluates the same examples (seeded crops and flips of the held-out tiles, steps spread
evenly over 0..T-1, seeded noise, no text dropped), so values from different checkpoints of a run
are directly comparable, with far less variance than the per-batch training loss (whose random
steps dominate its spread).
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.cosynth import CosynthModel
from .dataset import TileDataset


def validation_set(tiles, *, taxonomy, tile_size: int, tissue: str | None,
                   class_luts: dict[tuple[str, ...], np.ndarray] | None = None) -> TileDataset:
    """The held-out tiles as a dataset for :func:`validation_losses` (prompts never dropped;
    ``class_luts`` as in :class:`TileDataset`, for tiles of several sources)."""
    return TileDataset(tiles, taxonomy=taxonomy, tile_size=tile_size, tissue=tissue, text_drop_prob=0.0,
                       class_luts=class_luts)


@torch.no_grad()
def validation_losses(
    model: CosynthModel, dataset: TileDataset, *, n_examples: int = 64, batch_size: int = 8, seed: int = 0
) -> dict[str, float]:
    """Mean joint loss terms ("image", "distance", "label", "total") over ``n_examples`` fixed examples."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=model.device).manual_seed(seed + 1)
    steps = np.linspace(0, model.process.num_steps - 1, n_examples).round().astype(np.int64)
    steps = steps[np.random.default_rng(seed + 2).permutation(n_examples)]  # every batch sees low and high noise
    sums: dict[str, float] = {}
    done = 0
    try:
        while done < n_examples:
            b = min(batch_size, n_examples - done)
            batch = dataset.batch(b, rng)
            x0 = type(batch.x0)(*(x.to(model.device) for x in (batch.x0.image, batch.x0.distance, batch.x0.label)))
            keep = torch.ones(b, dtype=torch.bool)
            losses = model.training_losses(x0, batch.points.to(model.device), batch.prompts, keep, generator,
                                           t=torch.from_numpy(steps[done:done + b]))
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value) * b
            done += b
    finally:
        model.train(was_training)
    return {key: value / n_examples for key, value in sums.items()}
