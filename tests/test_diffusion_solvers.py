"""DPM-Solver++(2M) and its SDE form for the Gaussian parts of the joint chain, and the step spacings."""

from __future__ import annotations

import pytest
import torch

from wsi_cosynth.diffusion.gaussian import GaussianDiffusion
from wsi_cosynth.diffusion.joint import JointDiffusion, JointPrediction, JointState
from wsi_cosynth.diffusion.categorical import index_to_log_onehot
from wsi_cosynth.diffusion.samplers import sample_steps, sample_strided
from wsi_cosynth.diffusion.schedules import CosineSchedule, strided_timesteps

pytestmark = pytest.mark.usefixtures("torch_one_thread")

K = 3


def _process(T: int) -> JointDiffusion:
    s = CosineSchedule(T)
    return JointDiffusion(image=s, distance=s, label=s, num_classes=K)


@pytest.mark.parametrize("method", ["dpmpp_2m", "dpmpp_2m_sde"])
@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
def test_solvers_recover_data_under_an_oracle(method, spacing):
    process = _process(100)
    gen = torch.Generator().manual_seed(0)
    x0 = JointState(torch.rand(2, 3, 8, 8, generator=gen) * 1.6 - 0.8, torch.rand(2, 1, 8, 8, generator=gen) * 2 - 1,
                    torch.randint(0, K, (2, 8, 8), generator=gen))
    calls = []

    def oracle(x_t: JointState, t: torch.Tensor) -> JointPrediction:
        calls.append(int(t[0]))
        return JointPrediction(process.image.predict_eps(x_t.image, t, x0.image),
                               process.distance.predict_eps(x_t.distance, t, x0.distance), index_to_log_onehot(x0.label, K))

    out = sample_steps(oracle, (2, 8, 8), process, timesteps=strided_timesteps(100, 6, spacing), method=method,
                       generator=gen)
    assert calls == strided_timesteps(100, 6, spacing)
    assert torch.allclose(out.image, x0.image, atol=1e-4)
    assert torch.allclose(out.distance, x0.distance, atol=1e-4)
    assert torch.equal(out.label, x0.label)


def test_first_order_sde_step_is_the_ddpm_posterior_step():
    g = GaussianDiffusion(CosineSchedule(1000), clip_x0=False)
    gen = torch.Generator().manual_seed(3)
    x_t, eps, z = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
    t, s = torch.tensor([700, 700]), torch.tensor([400, 400])
    ddpm = g.ddpm_step(x_t, eps, t, s, z)
    sde, _ = g.dpm_solver_step(x_t, eps, t, s, z, previous=None, eta=1.0)
    assert torch.allclose(ddpm, sde, atol=1e-5)


def _gaussian_data_ode(c: float, steps: int, method: str, spacing: str) -> tuple[float, float]:
    """Solve the probability-flow ODE for data x0 ~ N(0, c^2), where the exact denoiser is known,
    from x_{T-1} = 1 to the last strided step; return (solver's x, exact x). The ODE maps x_t to
    x_t * sqrt(abar_s c^2 + 1 - abar_s) / sqrt(abar_t c^2 + 1 - abar_t)."""
    g = GaussianDiffusion(CosineSchedule(1000), clip_x0=False)
    ts = strided_timesteps(1000, steps, spacing)
    x = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    history = None
    for t, s in zip(ts, ts[1:]):
        tb, sb = torch.tensor([t]), torch.tensor([s])
        abar = g.abar(tb)
        x0_mean = abar.sqrt() * c**2 / (abar * c**2 + 1 - abar) * x  # E[x0 | x_t]
        eps = g.predict_eps(x, tb, x0_mean)
        if method == "ddim":
            x = g.ddim_step(x, eps, tb, sb, torch.zeros_like(x), eta=0.0)
        else:
            x, history = g.dpm_solver_step(x, eps, tb, sb, torch.zeros_like(x), previous=history, eta=0.0)
    a_first, a_last = g.abar(torch.tensor([ts[0]])), g.abar(torch.tensor([ts[-1]]))
    exact = ((a_last * c**2 + 1 - a_last) / (a_first * c**2 + 1 - a_first)).sqrt()
    return float(x), float(exact)


@pytest.mark.parametrize("spacing,max_ratio", [("trailing", 0.25), ("linspace", 1.0)])
def test_second_order_solver_tracks_the_ode_better_than_ddim(spacing, max_ratio):
    """DPM-Solver++(2M) is second order: at 8 evenly spread steps its error on a Gaussian's exact
    ODE is a small fraction of DDIM's (first order); over linspace's last, 5x longer jump it falls
    back to first order rather than overshoot, so it is never worse than DDIM."""
    c = 0.3
    x_2m, exact = _gaussian_data_ode(c, 8, "dpmpp_2m", spacing)
    x_ddim, _ = _gaussian_data_ode(c, 8, "ddim", spacing)
    err_2m, err_ddim = abs(x_2m - exact), abs(x_ddim - exact)
    assert err_ddim > 1e-2
    assert err_2m < max_ratio * err_ddim


def test_trailing_spacing_spreads_every_pass_over_the_noise():
    ts = strided_timesteps(1000, 8, "trailing")
    assert ts == [999, 874, 749, 624, 499, 374, 249, 124]
    assert strided_timesteps(1000, 8, "linspace")[-1] == 0
    assert strided_timesteps(10, 10, "trailing") == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="spacing"):
        strided_timesteps(1000, 8, "uniform")


def test_unknown_sampler_is_refused():
    process = _process(10)
    with pytest.raises(ValueError, match="dpmpp_2m"):
        sample_strided(lambda x, t: None, (1, 4, 4), process, steps=3, method="euler", generator=torch.Generator())


@pytest.mark.parametrize("final_label", ["sample", "mode"])
def test_final_label_mode_takes_the_most_likely_class(final_label):
    """A prediction of 60% class 1 / 40% class 2 everywhere: "mode" ends on class 1 at every pixel,
    "sample" on a mixture near 60 / 40."""
    process = _process(20)
    probs = torch.tensor([1e-6, 0.6, 0.4]).log().view(1, K, 1, 1)

    def model_fn(x_t: JointState, t: torch.Tensor) -> JointPrediction:
        b = x_t.label.shape[0]
        return JointPrediction(torch.zeros_like(x_t.image), torch.zeros_like(x_t.distance),
                               torch.log_softmax(probs.expand(b, K, 32, 32), 1))

    out = sample_steps(model_fn, (1, 32, 32), process, timesteps=strided_timesteps(20, 4), method="dpmpp_2m",
                       generator=torch.Generator().manual_seed(0), final_label=final_label)
    share_1 = (out.label == 1).float().mean().item()
    if final_label == "mode":
        assert share_1 == 1.0
    else:
        assert 0.5 < share_1 < 0.7
