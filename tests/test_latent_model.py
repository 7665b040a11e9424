"""Latent joint model: the image autoencoder, the latent denoiser, its warm start from a pixel
model, and training + sampling end to end on a tiny config."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsi_cosynth.diffusion.joint import JointState
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.models.autoencoder import ImageAutoencoder
from wsi_cosynth.models.config import AutoencoderConfig, CosynthConfig, load_config
from wsi_cosynth.models.cosynth import CosynthModel
from wsi_cosynth.records import Layout, Provenance
from wsi_cosynth.taxonomy import get_taxonomy
from wsi_cosynth.training.autoencoder import train_autoencoder
from wsi_cosynth.training.checkpoint import load_model
from wsi_cosynth.training.dataset import TileDataset
from wsi_cosynth.training.latent_init import adapt_pixel_state
from wsi_cosynth.training.loop import train

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _config(latent: bool, **train) -> CosynthConfig:
    """The tiny preset at unshuffle 2 (a latent model needs factor = unshuffle), with or without a latent image."""
    base = load_config("tiny").to_dict()
    base["model"]["unshuffle"] = 2
    base["model"]["image_latent"] = ({"latent_channels": 3, "factor": 2, "channels": 16, "blocks": 1,
                                      "full_res_channels": 8} if latent else None)
    base["train"].update({"checkpoint_every": 2, "log_every": 1, "num_threads": 1, "autoencoder_steps": 3, **train})
    return CosynthConfig.from_dict(base)


@pytest.fixture(scope="module")
def tiles():
    from conftest import data_path
    from wsi_cosynth.exporters import read_dataset

    return list(itertools.islice(read_dataset(data_path("consep", "train"), "consep"), 3))


def _dataset(tiles, size=32):
    return TileDataset(tiles, taxonomy=tiles[0].taxonomy, tile_size=size, tissue="colon")


def test_autoencoder_shapes_and_calibrated_scale(tiles, tmp_path):
    ae = ImageAutoencoder(AutoencoderConfig(latent_channels=4, factor=4, channels=16, blocks=1, full_res_channels=8))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert ae.encode(x).shape == (2, 4, 16, 16) and ae.decode(ae.encode(x)).shape == (2, 3, 64, 64)
    result = train_autoencoder(ae, _dataset(tiles), tmp_path / "ae", steps=4, batch_size=4, checkpoint_every=2)
    assert result["step"] == 4 and (tmp_path / "ae" / "autoencoder.pt").is_file()
    # the calibrated scale makes the training crops' latents unit-variance
    with torch.no_grad():
        z = ae.encode(_dataset(tiles).batch(16, np.random.default_rng(1)).x0.image)
    assert 0.8 < float(z.std()) < 1.25
    # resuming continues from the saved step, not from zero
    assert train_autoencoder(ae, _dataset(tiles), tmp_path / "ae", steps=6, batch_size=4)["step"] == 6


def test_config_requires_factor_equal_to_unshuffle():
    base = _config(True).to_dict()
    base["model"]["image_latent"]["factor"] = 4
    with pytest.raises(CosynthError, match="factor 4 must equal unshuffle 2"):
        CosynthConfig.from_dict(base)
    base = _config(True).to_dict()
    base["model"]["full_res_channels"] = 8
    with pytest.raises(CosynthError, match="full_res_channels needs a pixel-space image"):
        CosynthConfig.from_dict(base)


def test_latent_denoiser_predicts_latent_and_full_size_maps():
    tax = get_taxonomy("consep")
    model = CosynthModel(_config(True), tax, mpp=0.25)
    b, s = 2, 32
    x_t = JointState(torch.randn(b, 3, s // 2, s // 2), torch.randn(b, 1, s, s), torch.randint(0, tax.n_classes + 1, (b, s, s)))
    feats = model.denoiser.encode_points(torch.zeros(b, s, s, dtype=torch.long))
    text = model.encode_text(["colon"] * b, torch.ones(b, dtype=torch.bool))
    pred = model.denoiser(x_t, torch.tensor([10, 900]), text, feats)
    assert pred.eps_image.shape == (b, 3, s // 2, s // 2)
    assert pred.eps_distance.shape == (b, 1, s, s) and pred.log_x0_label.shape == (b, tax.n_classes + 1, s, s)
    assert not any(p.requires_grad for p in model.autoencoder.parameters())  # frozen in stage two


def test_warm_start_with_exact_maps_reproduces_the_pixel_model():
    """With identity maps (latent = the cell's unshuffled pixels) the mapped latent model must
    compute exactly the pixel model's function: checks which columns and rows move where."""
    tax = get_taxonomy("consep")
    torch.manual_seed(0)
    pixel = CosynthModel(_config(False), tax, mpp=0.25).eval()
    cfg = _config(True).to_dict()
    cfg["model"]["image_latent"]["latent_channels"] = 12  # = 3 x 2^2 pixel channels of a cell
    latent = CosynthModel(CosynthConfig.from_dict(cfg), tax, mpp=0.25).eval()
    eye = torch.eye(12)
    state = adapt_pixel_state(pixel.state_dict(), latent.state_dict(), (eye, torch.zeros(12), eye), pixel_channels=12)
    latent.load_state_dict(state)
    b, s = 2, 32
    image = torch.randn(b, 3, s, s)
    dist, label = torch.randn(b, 1, s, s), torch.randint(0, tax.n_classes + 1, (b, s, s))
    points = torch.randint(0, tax.n_classes + 1, (b, s, s))
    t, keep = torch.tensor([5, 700]), torch.ones(b, dtype=torch.bool)
    with torch.no_grad():
        p = pixel.denoiser(JointState(image, dist, label), t, pixel.encode_text(["colon"] * b, keep),
                           pixel.denoiser.encode_points(points))
        q = latent.denoiser(JointState(F.pixel_unshuffle(image, 2), dist, label), t, latent.encode_text(["colon"] * b, keep),
                            latent.denoiser.encode_points(points))
    assert torch.allclose(F.pixel_unshuffle(p.eps_image, 2), q.eps_image, atol=1e-5)
    assert torch.allclose(p.eps_distance, q.eps_distance, atol=1e-5)
    assert torch.allclose(p.log_x0_label, q.log_x0_label, atol=1e-5)


def test_latent_training_warm_start_and_sampling_end_to_end(tiles, tmp_path):
    ds = _dataset(tiles)
    train(_config(False, steps=2), ds, tmp_path / "pixel", mpp=0.25, progress=False)
    model = train(_config(True, steps=2), ds, tmp_path / "latent", mpp=0.25, progress=False,
                  init_from=tmp_path / "pixel" / "model")
    assert (tmp_path / "latent" / "autoencoder" / "autoencoder.pt").is_file()  # stage one ran first
    loaded = load_model(tmp_path / "latent" / "model")
    assert loaded.autoencoder is not None
    for k, v in model.state_dict().items():
        assert torch.allclose(v.float(), loaded.state_dict()[k].float()), k
    # stage two left the autoencoder as stage one made it
    stage_one = torch.load(tmp_path / "latent" / "autoencoder" / "autoencoder.pt", weights_only=False)["weights"]
    for k, v in stage_one.items():
        assert torch.equal(loaded.autoencoder.state_dict()[k].float(), v.float()), k
    rng = np.random.default_rng(0)
    layouts = [Layout(rng.uniform(0, 32, (6, 2)), rng.integers(1, 5, 6), (32, 32), loaded.taxonomy, Provenance(name=f"l{i}"))
               for i in range(2)]
    out = loaded.sample(layouts, steps=3, generator=torch.Generator().manual_seed(0))
    assert [o.image.shape for o in out] == [(32, 32, 3)] * 2 and out[0].image.dtype == np.uint8
    assert out[0].semantic.shape == (32, 32) and out[0].distance.shape == (32, 32)
    assert not np.array_equal(out[0].image, out[1].image)
    # a second latent run can reuse this one's autoencoder instead of training its own
    train(_config(True, steps=2), ds, tmp_path / "again", mpp=0.25, progress=False,
          autoencoder_from=tmp_path / "latent" / "model")
    assert not (tmp_path / "again" / "autoencoder").exists()
    again = load_model(tmp_path / "again" / "model")
    for k, v in loaded.autoencoder.state_dict().items():
        assert torch.equal(again.autoencoder.state_dict()[k], v), k


def test_latent_image_estimates_are_not_clipped_but_pixel_and_distance_ones_are():
    # Unit-variance latents lie outside [-1, 1] a third of the time: clipping the sampler's x0
    # estimate there squashes the decoded tile toward grey (the pixel model's image and every
    # model's distance map are data in [-1, 1], where the clip is right).
    taxonomy = get_taxonomy("consep")
    latent = CosynthModel(_config(True), taxonomy, mpp=0.25).process
    pixel = CosynthModel(_config(False), taxonomy, mpp=0.25).process
    x_t = torch.full((1, 3, 4, 4), 2.5)
    t = torch.tensor([0])
    eps = torch.zeros_like(x_t)
    assert float(latent.image.predict_x0(x_t, t, eps).min()) > 2.4
    assert float(pixel.image.predict_x0(x_t, t, eps).max()) == 1.0
    assert float(latent.distance.predict_x0(x_t[:, :1], t, eps[:, :1]).max()) == 1.0
