"""The partial-label loss: a nucleus pixel of unknown class counts as "some nucleus class" and is
never pushed toward any one class (diffusion/categorical.py, "Partial labels")."""

from __future__ import annotations

import math

import pytest
import torch

from wsi_cosynth.diffusion.categorical import CategoricalDiffusion, index_to_log_onehot, log_x0_with_unknown
from wsi_cosynth.diffusion.schedules import CosineSchedule

K = 5  # background + 4 nucleus classes
UNKNOWN = K


@pytest.fixture(scope="module")
def process() -> CategoricalDiffusion:
    return CategoricalDiffusion(CosineSchedule(1000), K)


def _pixel_loss(process, logits: torch.Tensor, t: int, x_t: int, *, ce_weight: float = 1.0) -> torch.Tensor:
    """The label loss of one unknown-class pixel, (1, K, 1, 1) logits, at step ``t`` with x_t = ``x_t``."""
    label = torch.full((1, 1, 1), UNKNOWN)
    log_x0, unknown = log_x0_with_unknown(label, K)
    return process.loss(log_x0, torch.full((1, 1, 1), x_t), torch.tensor([t]), logits, ce_weight=ce_weight,
                        unknown=unknown)[0]


def _logits(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float32).log().view(1, K, 1, 1)


def test_unknown_data_is_uniform_over_nucleus_classes():
    label = torch.tensor([[[0, 2, UNKNOWN]]])
    log_x0, unknown = log_x0_with_unknown(label, K)
    assert unknown.tolist() == [[[False, False, True]]]
    p = log_x0.exp()[0, :, 0]
    assert torch.allclose(p[:, 0], torch.eye(K)[0], atol=1e-6) and torch.allclose(p[:, 1], torch.eye(K)[2], atol=1e-6)
    assert p[0, 2] < 1e-6 and torch.allclose(p[1:, 2], torch.full((K - 1,), 1 / (K - 1)))
    # without unknown pixels it is exactly the one-hot of before
    plain = torch.tensor([[[0, 2, 4]]])
    same, none = log_x0_with_unknown(plain, K)
    assert none is None and torch.equal(same, index_to_log_onehot(plain, K))


@pytest.mark.parametrize("t", [0, 3, 200, 900])
def test_loss_does_not_care_how_nucleus_probability_is_split(process, t):
    """All mass on nucleus classes: the same loss (zero KL, zero CE) whichever class holds it."""
    splits = [[1e-7, 1, 0, 0, 0], [1e-7, 0, 0, 1, 0], [1e-7, .25, .25, .25, .25], [1e-7, .7, .1, .1, .1]]
    for x_t in (0, 1, 3):
        losses = [float(_pixel_loss(process, _logits([max(v, 1e-7) for v in s]), t, x_t)) for s in splits]
        assert max(losses) - min(losses) < 1e-4, (t, x_t, losses)


def test_nll_and_ce_depend_only_on_the_nucleus_mass(process):
    """At t = 0 (decoder NLL) and in the CE term: -log(sum of nucleus probabilities), whatever the split."""
    a = _logits([0.4, 0.6, 1e-6, 1e-6, 1e-6])
    b = _logits([0.4, 0.15, 0.15, 0.15, 0.15])
    for t in (0,):
        la, lb = _pixel_loss(process, a, t, 0), _pixel_loss(process, b, t, 0)
        # NLL + CE (weight 1) + the constant prior term, which is the same for both
        assert float(la) == pytest.approx(float(lb), abs=1e-5)
        prior = float(process.prior_kl(log_x0_with_unknown(torch.full((1, 1, 1), UNKNOWN), K)[0])[0])
        assert float(la) - prior == pytest.approx(-2 * math.log(0.6), rel=1e-4)


def test_gradient_is_symmetric_over_nucleus_classes(process):
    """Equal nucleus logits get equal gradients: no class is preferred (t = 0, and t > 0 averaged
    over x_t drawn from each nucleus class, as the forward process draws it for unknown pixels)."""
    for t, x_ts in ((0, [0]), (40, [1, 2, 3, 4]), (600, [0]), (600, [1, 2, 3, 4])):
        logits = torch.tensor([1.0, 0.2, 0.2, 0.2, 0.2]).view(1, K, 1, 1).requires_grad_(True)
        sum(_pixel_loss(process, logits, t, x) for x in x_ts).backward()
        g = logits.grad.view(-1)
        assert torch.allclose(g[1:], g[1:].mean().expand(K - 1), atol=1e-6), (t, g)
        assert g[0] > 0 and (g[1:] < 0).all()  # background mass down, every nucleus class up alike


def test_unknown_pixel_still_teaches_nucleus(process):
    """Predicting background for an unknown nucleus pixel costs more than predicting any class."""
    background = float(_pixel_loss(process, _logits([0.96, 0.01, 0.01, 0.01, 0.01]), 0, 0))
    for c in range(1, K):
        probs = [0.01] * K
        probs[c] = 0.96
        assert float(_pixel_loss(process, _logits(probs), 0, 0)) < background - 1.0


def test_classified_pixels_lose_exactly_as_before(process):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, K, (2, 6, 6), generator=g)
    logits = torch.randn(2, K, 6, 6, generator=g)
    x_t = torch.randint(0, K, (2, 6, 6), generator=g)
    t = torch.tensor([0, 250])
    log_x0, unknown = log_x0_with_unknown(label, K)
    assert unknown is None
    assert torch.equal(process.loss(log_x0, x_t, t, logits, ce_weight=1.0),
                       process.loss(index_to_log_onehot(label, K), x_t, t, logits, ce_weight=1.0))


def test_joint_training_loss_with_unknown_pixels_runs_and_noises_them_as_nuclei():
    from wsi_cosynth.diffusion.joint import JointDiffusion, JointPrediction, JointState

    s = CosineSchedule(1000)
    jd = JointDiffusion(image=s, distance=s, label=s, num_classes=K)
    label = torch.zeros(4, 16, 16, dtype=torch.long)
    label[:, 2:14, 2:14] = UNKNOWN  # mostly unknown nucleus, so the loss as a whole must want nuclei
    label[:, 0, 0] = 2
    x0 = JointState(torch.zeros(4, 3, 16, 16), torch.zeros(4, 1, 16, 16), label)
    g = torch.Generator().manual_seed(1)
    x_t, _, _ = jd.q_sample(x0, torch.tensor([0, 0, 0, 0]), g)
    inside = x_t.label[:, 2:14, 2:14]
    assert (inside >= 1).all() and (inside <= K - 1).all()  # a nucleus class, never background or K
    counts = torch.bincount(inside.flatten(), minlength=K)[1:].float()
    assert counts.min() > 0.15 * counts.sum()  # spread over the classes (1/4 each)
    weights = torch.zeros(K, requires_grad=True)

    def model_fn(x, t):
        b, _, h, w = x.image.shape
        return JointPrediction(torch.zeros_like(x.image), torch.zeros_like(x.distance),
                               weights.view(1, K, 1, 1).expand(b, K, h, w).log_softmax(1))

    out = jd.losses(model_fn, x0, torch.tensor([0, 10, 500, 999]), g)
    assert torch.isfinite(out["total"])
    out["label"].backward()
    assert torch.isfinite(weights.grad).all()
    # an all-unknown tile: every class-k logit is pushed up alike, background down
    all_unknown = JointState(x0.image, x0.distance, torch.full_like(label, UNKNOWN))
    weights.grad = None
    jd.losses(model_fn, all_unknown, torch.tensor([0, 10, 500, 999]), g)["label"].backward()
    grad = weights.grad
    assert grad[0] > 0 and (grad[1:] < 0).all()
    assert (grad[1:].max() - grad[1:].min()) < 0.1 * grad[1:].abs().mean()
