"""Samplers recover the data under an oracle denoiser; guided and seeded sampling of a real model."""

from __future__ import annotations

import pytest
import torch

from wsi_cosynth.diffusion.categorical import index_to_log_onehot
from wsi_cosynth.diffusion.guidance import guided_model_fn
from wsi_cosynth.diffusion.joint import JointDiffusion, JointPrediction, JointState
from wsi_cosynth.diffusion.samplers import sample_ancestral, sample_strided
from wsi_cosynth.diffusion.schedules import CosineSchedule


pytestmark = pytest.mark.usefixtures("torch_one_thread")

K = 4


def _process(T: int) -> JointDiffusion:
    s = CosineSchedule(T)
    return JointDiffusion(image=s, distance=s, label=s, num_classes=K)


def _oracle(process: JointDiffusion, x0: JointState):
    """A model that knows x0: predicts the noise consistent with it and a one-hot label."""
    calls = []

    def model_fn(x_t: JointState, t: torch.Tensor) -> JointPrediction:
        calls.append(int(t[0]))
        return JointPrediction(
            process.image.predict_eps(x_t.image, t, x0.image),
            process.distance.predict_eps(x_t.distance, t, x0.distance),
            index_to_log_onehot(x0.label, K),
        )

    return model_fn, calls


def _data(gen: torch.Generator) -> JointState:
    return JointState(torch.rand(2, 3, 8, 8, generator=gen) * 1.6 - 0.8, torch.rand(2, 1, 8, 8, generator=gen) * 2 - 1,
                      torch.randint(0, K, (2, 8, 8), generator=gen))


@pytest.mark.parametrize("kind", ["ancestral", "ddpm", "ddim", "ddim-eta"])
def test_samplers_recover_data_under_an_oracle(kind):
    process = _process(50)
    gen = torch.Generator().manual_seed(0)
    x0 = _data(gen)
    model_fn, calls = _oracle(process, x0)
    if kind == "ancestral":
        out = sample_ancestral(model_fn, (2, 8, 8), process, generator=gen)
        assert calls == list(range(49, -1, -1))
    else:
        method = "ddpm" if kind == "ddpm" else "ddim"
        out = sample_strided(model_fn, (2, 8, 8), process, steps=7, method=method,
                             eta=0.5 if kind == "ddim-eta" else 0.0, generator=gen)
        assert len(calls) == 7 and calls[0] == 49 and calls[-1] == 0
    assert torch.allclose(out.image, x0.image, atol=1e-4)
    assert torch.allclose(out.distance, x0.distance, atol=1e-4)
    assert torch.equal(out.label, x0.label)


def test_label_chain_moves_towards_x0_and_is_noisy_early():
    """Intermediate label states: near uniform at the start, equal to x0 at the end."""
    process = _process(100)
    gen = torch.Generator().manual_seed(1)
    x0 = JointState(torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 32, 32), torch.full((1, 32, 32), 2))
    model_fn, _ = _oracle(process, x0)
    seen = {}
    sample_strided(model_fn, (1, 32, 32), process, steps=10, method="ddpm", generator=gen,
                   callback=lambda i, t, x: seen.__setitem__(i, (x.label == 2).float().mean().item()))
    assert seen[0] < 0.45  # uniform start: ~1/K of pixels agree
    assert seen[9] > 0.9


def test_guided_model_fn_runs_one_batched_forward():
    sizes = []

    def paired(x_t: JointState, t: torch.Tensor) -> JointPrediction:
        sizes.append(x_t.image.shape[0])
        b = x_t.image.shape[0] // 2
        sign = torch.cat([torch.ones(b), -torch.ones(b)]).view(-1, 1, 1, 1)
        return JointPrediction(sign * torch.ones_like(x_t.image), sign * torch.ones_like(x_t.distance),
                               torch.log_softmax(sign * torch.arange(K).float().view(1, K, 1, 1).expand(2 * b, K, 8, 8), 1))

    x = _data(torch.Generator().manual_seed(0))
    out = guided_model_fn(paired, 2.0)(x, torch.zeros(2, dtype=torch.long))
    assert sizes == [4]
    assert torch.allclose(out.eps_image, torch.full_like(x.image, 3.0))  # -1 + 2 * (1 - -1)
