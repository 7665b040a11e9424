"""The bundled default model: present, small, consistent with its card, and usable offline."""

from __future__ import annotations

import numpy as np
import pytest

import wsi_cosynth as wc
from wsi_cosynth.pipeline.synthetic import default_model_path
from wsi_cosynth.records import Layout, Provenance
from wsi_cosynth.training.checkpoint import read_metadata

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_bundled_model_is_small_and_described():
    path = default_model_path()
    assert (path / "model.safetensors").stat().st_size <= 20 * 2**20
    meta = read_metadata(path)
    assert meta["taxonomy"]["key"] == "consep" and meta["mpp"] == 0.25 and meta["tile_size"] == 256
    card = (path / "MODEL_CARD.md").read_text()
    assert f"{meta['steps']:,}" in card and "not paper quality" in card.lower()


def test_bundled_model_synthesises_a_labelled_tile_that_follows_its_layout():
    model = wc.load_model()
    xy = np.array([[40.5, 40.5], [120.5, 60.5], [200.5, 200.5]])
    layout = Layout(xy, np.array([3, 2, 4]), (256, 256), model.taxonomy, Provenance("t", tissue="colon"))
    (tile,) = wc.synthesize([layout], model, steps=3, seed=0)
    assert tile.image.shape == (256, 256, 3) and tile.image.dtype == np.uint8
    assert tile.distance is not None and 0.0 <= tile.distance.min() and tile.distance.max() <= 1.0
    # Every instance the watershed made is a valid, contiguous id with a class of the taxonomy.
    assert set(np.unique(tile.instances)) == set(range(tile.n_nuclei + 1))
    again = wc.synthesize([layout], model, steps=3, seed=0)[0]
    np.testing.assert_array_equal(tile.image, again.image)
