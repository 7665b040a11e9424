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


def test_bundled_model_is_latent_and_its_autoencoder_keeps_real_tissue():
    """The default model diffuses the image as its autoencoder's latent: the autoencoder must
    reconstruct a real tile it never trained on closely, or every sample inherits the loss."""
    import torch
    from conftest import data_path

    from wsi_cosynth.exporters import read_dataset

    model = wc.load_model()
    assert model.config.model.image_latent is not None and model.autoencoder is not None
    held_out = read_metadata(default_model_path())["data"]["holdout_images"]
    tile = next(t for t in read_dataset(data_path("consep", "train"), "consep")
                if any(t.provenance.name.startswith(f"{h}_") for h in held_out))
    x = torch.from_numpy(tile.image.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        z = model.autoencoder.encode(x)
        y = model.autoencoder.decode(z).clamp(-1, 1)
    assert z.shape == (1, 4, 64, 64) and 0.5 < float(z.std()) < 2.0  # unit-scale latents for the diffusion
    mse = float(((y - x) ** 2).mean()) * 127.5 ** 2
    assert 10 * np.log10(255.0 ** 2 / mse) >= 28.0  # PSNR in dB (33.8 on the 48 held-out tiles)


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


def test_bundling_halves_the_weights_and_sets_the_models_own_sampling_settings(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import torch

    from wsi_cosynth.models.config import load_config
    from wsi_cosynth.models.cosynth import CosynthModel
    from wsi_cosynth.taxonomy import get_taxonomy
    from wsi_cosynth.training.checkpoint import save_checkpoint

    model = CosynthModel(load_config("tiny"), get_taxonomy("consep"), mpp=0.25)
    save_checkpoint(tmp_path / "run", model, steps=7)
    bundler = Path(__file__).resolve().parents[1] / "scripts" / "bundle_model.py"
    script = [sys.executable, str(bundler), str(tmp_path / "run"), str(tmp_path / "bundle")]
    subprocess.run([*script, "--sample", "sampler=ddpm", "--sample", "steps=30"], check=True, capture_output=True)
    bundled = wc.load_model(tmp_path / "bundle")
    assert bundled.config.sample.sampler == "ddpm" and bundled.config.sample.steps == 30
    assert bundled.config.sample.guidance == model.config.sample.guidance  # the rest as trained
    before, after = model.state_dict(), bundled.state_dict()
    key = next(k for k, v in before.items() if v.is_floating_point() and v.numel() > 100)
    assert torch.equal(after[key], before[key].half().float())
    bad = subprocess.run([*script, "--sample", "sampler=euler"], capture_output=True, text=True)
    assert bad.returncode != 0 and "sampler" in bad.stderr and "Traceback" not in bad.stderr
