"""Forward processes, posteriors, KL, strided composition and guidance of the joint diffusion."""

from __future__ import annotations

import math

import pytest
import torch

from wsi_cosynth.diffusion.categorical import (
    CategoricalDiffusion,
    argmax_classes,
    categorical_kl,
    index_to_log_onehot,
)
from wsi_cosynth.diffusion.gaussian import GaussianDiffusion
from wsi_cosynth.diffusion.guidance import combine_guidance
from wsi_cosynth.diffusion.joint import JointPrediction
from wsi_cosynth.diffusion.schedules import CosineSchedule, strided_timesteps


pytestmark = pytest.mark.usefixtures("torch_one_thread")

K = 5


def test_cosine_schedule_is_monotone_and_ends_near_zero():
    abar = CosineSchedule(1000).alpha_bar()
    assert abar.shape == (1000,)
    assert torch.all(abar[1:] < abar[:-1])
    assert 0.999 < abar[0] < 1.0 and abar[-1] < 1e-4
    # f(t)/f(0) of the closed form at the midpoint
    s = 0.008
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    assert abar[499].item() == pytest.approx(f(500 / 1000) / f(0), rel=1e-6)


def test_strided_timesteps_cover_both_ends():
    ts = strided_timesteps(1000, 25)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 25
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert strided_timesteps(10, 10) == list(range(9, -1, -1))


def test_gaussian_q_sample_matches_marginal():
    g = GaussianDiffusion(CosineSchedule(1000))
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.7, -0.3, 0.0]).view(1, 3, 1, 1).expand(20000, 3, 1, 1)
    for t in (10, 500, 900):
        tt = torch.full((20000,), t)
        xt = g.q_sample(x0, tt, torch.randn(x0.shape, generator=gen))
        abar = g.alpha_bar[t].item()
        assert torch.allclose(xt.mean(0).flatten(), math.sqrt(abar) * x0[0].flatten(), atol=0.03)
        assert torch.allclose(xt.var(0).flatten(), torch.full((3,), 1 - abar), rtol=0.05, atol=2e-3)


@pytest.mark.parametrize("t,s", [(1, 0), (10, 9), (400, 120), (999, 0), (5, -1)])
def test_gaussian_posterior_marginalises_to_q_xs(t, s):
    """E_{x_t}[mean] = sqrt(abar_s) x0 and E[var] + Var[mean] = 1 - abar_s (law of total variance)."""
    g = GaussianDiffusion(CosineSchedule(1000), clip_x0=False)
    tt, ss = torch.tensor([t]), torch.tensor([s])
    x0 = torch.full((1, 1, 1, 1), 0.6, dtype=torch.float64)
    zero = torch.zeros_like(x0)
    c_x0 = g.posterior(x0, zero, tt, ss).mean  # coefficient of x0 times x0
    c_xt = g.posterior(zero, torch.ones_like(x0), tt, ss).mean  # coefficient of x_t
    var = g.posterior(x0, zero, tt, ss).var
    abar_t, abar_s = g.abar(tt).item(), g.abar(ss).item()
    assert (c_x0 + c_xt * math.sqrt(abar_t) * x0).item() == pytest.approx(math.sqrt(abar_s) * 0.6, abs=1e-9)
    assert (c_xt**2 * (1 - abar_t) + var).item() == pytest.approx(1 - abar_s, abs=1e-9)
    if s == t - 1 and s >= 0:  # the single-step DDPM posterior variance
        beta = 1 - abar_t / abar_s
        assert var.item() == pytest.approx(beta * (1 - abar_s) / (1 - abar_t), rel=1e-9)


def test_gaussian_posterior_to_clean_is_x0():
    g = GaussianDiffusion(CosineSchedule(1000), clip_x0=False)
    x0, xt = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    post = g.posterior(x0, xt, torch.tensor([300, 0]), torch.tensor([-1, -1]))
    assert torch.allclose(post.mean, x0, atol=1e-6) and torch.all(post.var == 0)


def test_ddim_eta_one_is_the_ddpm_posterior():
    g = GaussianDiffusion(CosineSchedule(1000), clip_x0=False)
    gen = torch.Generator().manual_seed(1)
    xt, eps = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    t, s = torch.tensor([700, 400]), torch.tensor([650, 200])
    post = g.posterior(g.predict_x0(xt, t, eps), xt, t, s)
    zero, one = torch.zeros_like(xt), torch.ones_like(xt)
    mean = g.ddim_step(xt, eps, t, s, zero, eta=1.0)
    sigma = g.ddim_step(xt, eps, t, s, one, eta=1.0) - mean
    assert torch.allclose(mean, post.mean, atol=1e-5)
    assert torch.allclose(sigma**2, post.var.expand_as(sigma), rtol=1e-4)
    # eta = 0 ignores the noise entirely
    assert torch.equal(g.ddim_step(xt, eps, t, s, zero, eta=0.0), g.ddim_step(xt, eps, t, s, one, eta=0.0))


def test_categorical_q_sample_matches_class_probabilities():
    cd = CategoricalDiffusion(CosineSchedule(1000), K)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((1, 100, 200), 2, dtype=torch.long)
    log_x0 = index_to_log_onehot(x0, K)
    for t in (50, 500, 800):
        xt = cd.q_sample(log_x0, torch.tensor([t]), gen)
        freq = torch.bincount(xt.flatten(), minlength=K).double() / xt.numel()
        abar = cd.alpha_bar[t].item()
        expected = torch.full((K,), (1 - abar) / K, dtype=torch.float64)
        expected[2] += abar
        assert torch.allclose(freq, expected, atol=0.01), (t, freq, expected)


def _posterior_matrix(cd: CategoricalDiffusion, log_x0: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """(K, K): row k = q(x_s | x_t = k, x0), for a (1, K, 1, 1) x0 distribution."""
    x_t = torch.arange(K).view(K, 1, 1)
    lp = cd.log_posterior(log_x0.expand(K, K, 1, 1), index_to_log_onehot(x_t, K), torch.full((K,), t), torch.full((K,), s))
    return lp.exp()[:, :, 0, 0].double()


@pytest.mark.parametrize("t,s", [(1, 0), (100, 99), (500, 37), (999, 998), (3, -1)])
def test_categorical_posterior_normalised_and_marginalises(t, s):
    cd = CategoricalDiffusion(CosineSchedule(1000), K)
    log_x0 = index_to_log_onehot(torch.tensor([[[3]]]), K)
    post = _posterior_matrix(cd, log_x0, t, s)
    assert torch.allclose(post.sum(1), torch.ones(K, dtype=torch.float64), atol=1e-5)
    # sum_{x_t} q(x_s | x_t, x0) q(x_t | x0) = q(x_s | x0)
    q_t = cd.log_q_xt_given_x0(log_x0, torch.tensor([t])).exp()[0, :, 0, 0].double()
    q_s = cd.log_q_xt_given_x0(log_x0, torch.tensor([s])).exp()[0, :, 0, 0].double() if s >= 0 else log_x0.exp()[0, :, 0, 0].double()
    assert torch.allclose(q_t @ post, q_s, atol=1e-5)
    if s == -1:  # to clean data the posterior is x0 itself
        assert torch.allclose(post, log_x0.exp()[0, :, 0, 0].double().expand(K, K), atol=1e-6)


def test_strided_categorical_step_equals_composed_single_steps():
    cd = CategoricalDiffusion(CosineSchedule(1000), K)
    gen = torch.Generator().manual_seed(3)
    log_x0 = torch.log_softmax(torch.randn(1, K, 1, 1, generator=gen) * 2, dim=1)  # a predicted distribution
    for t, s in ((10, 7), (600, 590), (40, -1)):
        composed = torch.eye(K, dtype=torch.float64)
        for u in range(t, s, -1):
            composed = composed @ _posterior_matrix(cd, log_x0, u, u - 1)
        assert torch.allclose(_posterior_matrix(cd, log_x0, t, s), composed, atol=1e-5), (t, s)


def test_kl_of_identical_distributions_is_zero():
    gen = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(2, K, 3, 3, generator=gen), dim=1)
    q = torch.log_softmax(torch.randn(2, K, 3, 3, generator=gen), dim=1)
    assert torch.allclose(categorical_kl(p, p), torch.zeros(2, 3, 3), atol=1e-6)
    assert torch.all(categorical_kl(p, q) > 0)


def test_categorical_loss_is_zero_for_a_perfect_prediction_and_positive_otherwise():
    cd = CategoricalDiffusion(CosineSchedule(1000), K)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, K, (3, 8, 8), generator=gen)
    log_x0 = index_to_log_onehot(x0, K)
    t = torch.tensor([0, 10, 500])
    xt = cd.q_sample(log_x0, t, gen)
    prior = cd.prior_kl(log_x0)
    perfect = cd.loss(log_x0, xt, t, log_x0 * 1.0)
    assert torch.allclose(perfect, prior, atol=1e-5) and torch.all(prior < 1e-3)
    wrong = cd.loss(log_x0, xt, t, torch.zeros_like(log_x0))
    assert torch.all(wrong > perfect + 1e-6)
    assert torch.all(cd.loss(log_x0, xt, t, torch.zeros_like(log_x0), ce_weight=1.0) > wrong + 1.0)


def test_guidance_scale_one_and_zero():
    gen = torch.Generator().manual_seed(0)

    def pred() -> JointPrediction:
        return JointPrediction(torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 1, 4, 4, generator=gen),
                               torch.log_softmax(torch.randn(2, K, 4, 4, generator=gen), dim=1))

    c, u = pred(), pred()
    for w, ref in ((1.0, c), (0.0, u)):
        out = combine_guidance(c, u, w)
        assert torch.allclose(out.eps_image, ref.eps_image, atol=1e-6)
        assert torch.allclose(out.eps_distance, ref.eps_distance, atol=1e-6)
        assert torch.allclose(out.log_x0_label, ref.log_x0_label, atol=1e-5)
    out = combine_guidance(c, u, 2.0)
    assert torch.allclose(out.eps_image, 2 * c.eps_image - u.eps_image, atol=1e-6)
    assert torch.allclose(out.log_x0_label.exp().sum(1), torch.ones(2, 4, 4), atol=1e-5)


def test_argmax_classes_is_torch_argmax_over_classes_ties_included():
    gen = torch.Generator().manual_seed(0)
    ties = torch.randint(0, 3, (2, K, 17, 9), generator=gen).float()  # many equal maxima per pixel
    smooth = torch.randn(3, K, 8, 8, generator=gen)
    for x in (ties, smooth, smooth[:, :, ::2, 1:]):  # a strided view too
        assert torch.equal(argmax_classes(x), x.argmax(1))
    assert argmax_classes(ties).dtype == torch.int64 and argmax_classes(ties).shape == (2, 17, 9)
