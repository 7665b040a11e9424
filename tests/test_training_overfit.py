"""A tiny model overfits one real CoNSeP tile: the loss falls >= 10x and samples reproduce the
tile's semantic label (foreground IoU >= 0.8) and its image (low error)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from wsi_cosynth.exporters import read_dataset
from wsi_cosynth.models.config import load_config
from wsi_cosynth.records import Layout, Provenance
from wsi_cosynth.training.dataset import TileDataset
from wsi_cosynth.training.loop import train

SIZE = 32
STEPS = 800


@pytest.mark.slow
def test_tiny_model_overfits_one_consep_tile(tmp_path):
    from conftest import data_path

    torch.set_num_threads(1)
    tile = next(itertools.islice(read_dataset(data_path("consep", "train"), "consep"), 5, None))
    ds = TileDataset([tile], taxonomy=tile.taxonomy, tile_size=SIZE, tissue="colon", text_drop_prob=0.0, augment=False)
    config = load_config("tiny").with_overrides(
        tile_size=SIZE, steps=STEPS, batch_size=8, lr=2e-3, warmup_steps=20, ema_decay=0.95,
        checkpoint_every=STEPS, log_every=20, num_threads=1,
    )
    model = train(config, ds, tmp_path / "run", mpp=0.25, progress=False)

    log = [json.loads(line)["total"] for line in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert log[0] / np.mean(log[-3:]) >= 10, log

    truth = ds.tiles[0]
    sem_true = truth.semantic[:SIZE, :SIZE]
    rows, cols = np.nonzero(truth.points[:SIZE, :SIZE])
    layout = Layout(np.stack([cols + 0.5, rows + 0.5], 1), truth.points[rows, cols], (SIZE, SIZE), tile.taxonomy,
                    Provenance(name="overfit", tissue="colon"))
    outs = model.sample([layout, layout], steps=100, guidance=1.0, sampler="ddpm", generator=torch.Generator().manual_seed(0))
    for out in outs:
        fg_true, fg = sem_true > 0, out.semantic > 0
        iou = (fg & fg_true).sum() / max((fg | fg_true).sum(), 1)
        assert iou >= 0.8, iou
        mae = np.abs(out.image.astype(np.float64) - truth.image[:SIZE, :SIZE]).mean()
        assert mae < 20.0, mae  # out of 255
        class_acc = (out.semantic[fg_true] == sem_true[fg_true]).mean()
        assert class_acc >= 0.8, class_acc
