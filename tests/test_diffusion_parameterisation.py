"""v-prediction, Min-SNR weighting, training crops and warm starts."""

from __future__ import annotations

import itertools

import pytest
import torch

from wsi_cosynth.diffusion.joint import JointDiffusion, JointPrediction, JointState
from wsi_cosynth.diffusion.schedules import CosineSchedule
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.models.config import CosynthConfig, load_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _process(prediction="eps", gamma=None) -> JointDiffusion:
    s = CosineSchedule(1000)
    return JointDiffusion(image=s, distance=s, label=s, num_classes=3, prediction=prediction, min_snr_gamma=gamma)


def _state(b=4, size=8, seed=0) -> JointState:
    g = torch.Generator().manual_seed(seed)
    return JointState(torch.rand(b, 3, size, size, generator=g) * 2 - 1, torch.rand(b, 1, size, size, generator=g) * 2 - 1,
                      torch.randint(0, 3, (b, size, size), generator=g))


def _oracle(process: JointDiffusion, x0: JointState, t: torch.Tensor, seed: int):
    """A model function that returns the exact target of ``process`` for the noise of ``seed``."""
    def fn(x_t: JointState, tt: torch.Tensor) -> JointPrediction:
        g = torch.Generator().manual_seed(seed)
        _, eps_i, eps_d = process.q_sample(x0, tt, g)
        target_i = process._target(process.image, x0.image, eps_i, tt)
        target_d = process._target(process.distance, x0.distance, eps_d, tt)
        log_l = torch.log(torch.nn.functional.one_hot(x0.label, 3).permute(0, 3, 1, 2).float().clamp(min=1e-30))
        return JointPrediction(target_i, target_d, log_l)
    return fn


@pytest.mark.parametrize("t", [0, 500, 999])
def test_v_prediction_converts_back_to_the_true_noise(t):
    process = _process("v")
    x0 = _state()
    tt = torch.full((4,), t)
    g = torch.Generator().manual_seed(3)
    x_t, eps_i, eps_d = process.q_sample(x0, tt, g)
    v_i = process._target(process.image, x0.image, eps_i, tt)
    v_d = process._target(process.distance, x0.distance, eps_d, tt)
    eps = process.to_eps(JointPrediction(v_i, v_d, torch.zeros(4, 3, 8, 8)), x_t, tt)
    assert torch.allclose(eps.eps_image, eps_i, atol=1e-4)
    assert torch.allclose(eps.eps_distance, eps_d, atol=1e-4)
    # and x0 recovered from it is the data (to float32 rounding over sqrt(abar) ~ 1e-4 at t = 999)
    assert torch.allclose(process.image.predict_x0(x_t.image, tt, eps.eps_image), x0.image, atol=1e-2)


def test_eps_prediction_is_unchanged_by_to_eps():
    process = _process("eps")
    pred = JointPrediction(torch.randn(2, 3, 4, 4), torch.randn(2, 1, 4, 4), torch.zeros(2, 3, 4, 4))
    assert process.to_eps(pred, _state(2, 4), torch.tensor([5, 900])) is pred


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_gaussian_losses_vanish_for_the_exact_target_and_not_otherwise(prediction):
    process = _process(prediction, gamma=5.0)
    x0 = _state()
    t = torch.tensor([3, 200, 600, 990])
    exact = process.losses(_oracle(process, x0, t, 7), x0, t, torch.Generator().manual_seed(7))
    assert exact["image"].item() < 1e-10 and exact["distance"].item() < 1e-10

    def zero(x_t, tt):
        return JointPrediction(torch.zeros_like(x_t.image), torch.zeros_like(x_t.distance), torch.zeros(4, 3, 8, 8))

    wrong = process.losses(zero, x0, t, torch.Generator().manual_seed(7))
    assert wrong["image"].item() > 0.05


def test_min_snr_weights_follow_the_formula():
    eps, v = _process("eps", gamma=5.0), _process("v", gamma=5.0)
    t = torch.tensor([0, 100, 500, 999])
    abar = eps.image.abar(t)
    snr = abar / (1 - abar)
    assert torch.allclose(eps._snr_weight(eps.image, t).double(), snr.clamp(max=5) / snr, rtol=1e-5)
    assert torch.allclose(v._snr_weight(v.image, t).double(), snr.clamp(max=5) / (snr + 1), rtol=1e-5)
    assert _process("eps")._snr_weight(eps.image, t) is None
    w = eps._snr_weight(eps.image, t)
    assert w[0] < 0.01 and w[-1] == pytest.approx(1.0)  # low-noise steps are down-weighted


def test_bad_parameterisation_options_are_errors():
    with pytest.raises(ValueError, match="prediction"):
        _process("x0")
    with pytest.raises(ValueError, match="min_snr_gamma"):
        _process("eps", gamma=0.0)
    d = load_config("tiny").to_dict()
    d["diffusion"]["prediction"] = "sample"
    with pytest.raises(CosynthError, match="prediction"):
        CosynthConfig.from_dict(d)


def test_crop_size_is_checked_against_the_network():
    d = load_config("tiny").to_dict()
    d["train"]["crop_size"] = 16
    assert CosynthConfig.from_dict(d).train.crop_size == 16
    for bad in (15, 64):  # not a multiple of 2^(levels-1) x unshuffle; larger than the tile
        d["train"]["crop_size"] = bad
        with pytest.raises(CosynthError, match="crop_size"):
            CosynthConfig.from_dict(d)


@pytest.fixture(scope="module")
def tiles():
    from conftest import data_path

    from wsi_cosynth.exporters import read_dataset

    return list(itertools.islice(read_dataset(data_path("consep", "train"), "consep"), 3))


def _config(seed: int = 0, **diffusion) -> CosynthConfig:
    d = load_config("tiny").to_dict()
    d["diffusion"].update(diffusion)
    d["train"].update(steps=2, checkpoint_every=2, log_every=1, num_threads=1, crop_size=16, seed=seed)
    return CosynthConfig.from_dict(d)


def test_v_model_trains_on_crops_warm_starts_and_samples_whole_tiles(tiles, tmp_path):
    import numpy as np

    from wsi_cosynth.layouts import layout_from_tile
    from wsi_cosynth.records import Layout
    from wsi_cosynth.training.dataset import TileDataset
    from wsi_cosynth.training.loop import train

    config = _config(prediction="v", min_snr_gamma=5.0)
    ds = TileDataset(tiles, taxonomy=tiles[0].taxonomy, tile_size=16, tissue="colon")
    first = train(_config(seed=5, prediction="v", min_snr_gamma=5.0), ds, tmp_path / "a", mpp=0.25, progress=False)
    second = train(config, ds, tmp_path / "b", mpp=0.25, progress=False, init_from=tmp_path / "a" / "model")
    assert second.tile_size == 32  # the network samples the config's tile size, not the crop
    meta_b = (tmp_path / "b" / "model" / "model.json").read_text()
    assert "initialised_from" in meta_b
    # A warm start begins from the given weights (another seed's run): after 2 more steps it is
    # closer to them than a fresh run of its own seed is.
    fresh = train(config, ds, tmp_path / "c", mpp=0.25, progress=False)
    a, b, c = (dict(m.denoiser.named_parameters()) for m in (first, second, fresh))
    dist = lambda x, y: sum(float((x[k] - y[k]).detach().abs().sum()) for k in x)  # noqa: E731
    assert dist(a, b) < dist(a, c)
    lay = layout_from_tile(tiles[0])
    keep = (lay.xy_tile < 32).all(axis=1)
    small = Layout(xy_tile=lay.xy_tile[keep], classes=lay.classes[keep], size=(32, 32), taxonomy=lay.taxonomy,
                   provenance=lay.provenance)
    out = second.sample([small], steps=3, generator=torch.Generator().manual_seed(0))
    assert out[0].image.shape == (32, 32, 3) and np.isfinite(out[0].distance).all()


def test_init_from_a_mismatched_network_is_an_error(tiles, tmp_path):
    from wsi_cosynth.training.dataset import TileDataset
    from wsi_cosynth.training.loop import train

    ds = TileDataset(tiles, taxonomy=tiles[0].taxonomy, tile_size=16, tissue="colon")
    train(_config(), ds, tmp_path / "a", mpp=0.25, progress=False)
    d = _config().to_dict()
    d["model"]["channels"] = 24
    wider = CosynthConfig.from_dict(d)
    with pytest.raises(CosynthError, match="does not fit"):
        train(wider, ds, tmp_path / "b", mpp=0.25, progress=False, init_from=tmp_path / "a" / "model")
    # Gaining the full-resolution path is the one change a warm start accepts (it starts at zero).
    d = _config().to_dict()
    d["model"]["full_res_channels"] = 8
    finer = train(CosynthConfig.from_dict(d), ds, tmp_path / "d", mpp=0.25, progress=False,
                  init_from=tmp_path / "a" / "model")
    assert finer.config.model.full_res_channels == 8
    with pytest.raises(CosynthError, match="no model weights"):
        train(_config(), ds, tmp_path / "c", mpp=0.25, progress=False, init_from=tmp_path / "missing")
