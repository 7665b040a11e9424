"""Label-image agreement: hematoxylin density inside labelled nuclei vs outside."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import data_path
from wsi_cosynth.metrics.agreement import summarize_agreement, tile_agreement


def _consep_pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from PIL import Image

    root = data_path("consep", "train")
    stems = sorted(p.stem for p in (root / "images").glob("*.jpg"))[::27][:n]
    return [
        (np.asarray(Image.open(root / "images" / f"{s}.jpg").convert("RGB")), np.load(root / "inst" / f"{s}.npy"))
        for s in stems
    ]


def test_dark_disk_labelled_as_nucleus_scores_one_and_empty_tile_is_unscored() -> None:
    yy, xx = np.mgrid[:64, :64]
    disk = (yy - 32) ** 2 + (xx - 32) ** 2 < 100
    image = np.full((64, 64, 3), (235, 210, 225), dtype=np.uint8)  # pale pink background
    image[disk] = (70, 50, 140)  # hematoxylin purple-blue
    inst = disk.astype(np.int32)
    good = tile_agreement(image, inst)
    assert good.auc == pytest.approx(1.0)
    assert good.h_inside > good.h_outside
    inverted = tile_agreement(image, (~disk).astype(np.int32))
    assert inverted.auc == pytest.approx(0.0)
    empty = tile_agreement(image, np.zeros((64, 64), dtype=np.int32))
    assert math.isnan(empty.auc)
    summary = summarize_agreement([good, empty])
    assert summary["n_scored"] == 1 and summary["n_unscored"] == 1 and summary["mean_auc"] == pytest.approx(1.0)


def test_agreement_separates_real_pairs_from_labels_shuffled_between_tiles() -> None:
    pairs = _consep_pairs(16)
    rng = np.random.default_rng(0)
    # A derangement: every tile gets another tile's labels.
    perm = rng.permutation(len(pairs))
    while (perm == np.arange(len(pairs))).any():
        perm = rng.permutation(len(pairs))
    real = [tile_agreement(img, inst) for img, inst in pairs]
    shuffled = [tile_agreement(pairs[i][0], pairs[j][1]) for i, j in enumerate(perm)]
    s_real, s_shuf = summarize_agreement(real), summarize_agreement(shuffled)
    assert s_real["n_scored"] >= 12 and s_shuf["n_scored"] >= 12
    assert s_real["mean_auc"] > 0.8, s_real
    assert 0.35 < s_shuf["mean_auc"] < 0.65, s_shuf
    assert s_real["fraction_agreeing"] > 0.9 and s_shuf["fraction_agreeing"] < 0.3
    # Tile by tile, too: every scored real tile beats the best shuffled one's mean.
    aucs = np.array([t.auc for t in real])
    assert np.nanmin(aucs) > s_shuf["mean_auc"] + 0.15
