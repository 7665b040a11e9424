"""Samplers for the joint process: short explicit loops over a descending list of steps.

Every sampler starts from pure noise (Gaussian image and distance, uniform label), asks
``model_fn`` for the (already guided) prediction at each step and moves from step t to the next
step s < t with the exact posterior of each modality:

- image and distance: respaced DDPM, x_s ~ q(x_s | x_t, x0_hat), or DDIM with ``eta``;
- label: x_s ~ q(x_s | x_t, x0_hat) from the categorical posterior, exact for any s < t.

The last step goes to s = -1 (clean data): the Gaussian parts return x0_hat and the label is drawn
from the predicted x_0 distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from . import noise
from .joint import JointDiffusion, JointPrediction, JointState, ModelFn
from .schedules import strided_timesteps

Method = Literal["ddpm", "ddim"]
Callback = Callable[[int, int, JointState], None]
METHODS = ("ddpm", "ddim")


def initial_noise(
    shape: tuple[int, int, int], process: JointDiffusion, *, generator: torch.Generator, device: torch.device | str,
    image_shape: tuple[int, int, int] | None = None,
) -> JointState:
    """x_{T-1}: N(0, I) image (B, 3, H, W) and distance (B, 1, H, W); uniform label (B, H, W).
    ``image_shape`` (C, h, w) replaces the image's (3, H, W), e.g. for a latent image."""
    b, h, w = shape
    image = noise.randn((b, *(image_shape or (3, h, w))), generator, device)
    distance = noise.randn((b, 1, h, w), generator, device)
    label = noise.randint(process.num_classes, (b, h, w), generator, device)
    return JointState(image, distance, label)


def joint_step(
    process: JointDiffusion,
    x_t: JointState,
    pred: JointPrediction,
    t: int,
    s: int,
    *,
    method: Method,
    eta: float,
    generator: torch.Generator,
) -> JointState:
    """One reverse step t -> s (< t) for all three modalities."""
    b = x_t.label.shape[0]
    t_b = torch.full((b,), t, dtype=torch.long)
    s_b = torch.full((b,), s, dtype=torch.long)
    z_i = noise.randn(x_t.image.shape, generator, x_t.image.device)
    z_d = noise.randn(x_t.distance.shape, generator, x_t.distance.device)
    if method == "ddpm":
        image = process.image.ddpm_step(x_t.image, pred.eps_image, t_b, s_b, z_i)
        distance = process.distance.ddpm_step(x_t.distance, pred.eps_distance, t_b, s_b, z_d)
    else:
        image = process.image.ddim_step(x_t.image, pred.eps_image, t_b, s_b, z_i, eta=eta)
        distance = process.distance.ddim_step(x_t.distance, pred.eps_distance, t_b, s_b, z_d, eta=eta)
    label = process.label.step(pred.log_x0_label.float(), x_t.label, t_b, s_b, generator)
    return JointState(image, distance, label)


@torch.no_grad()
def sample_steps(
    model_fn: ModelFn,
    shape: tuple[int, int, int],
    process: JointDiffusion,
    *,
    timesteps: list[int],
    method: Method = "ddpm",
    eta: float = 0.0,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> JointState:
    """Run the reverse chain over ``timesteps`` (strictly descending, first = T-1) to clean data.

    ``callback(i, t, x_t)`` is called before each of the ``len(timesteps)`` network evaluations.
    ``image_shape``: the image part's (C, h, w) when it is not (3, H, W) (see :func:`initial_noise`).
    """
    if method not in METHODS:
        raise ValueError(f"sampler method must be one of {METHODS}, got {method!r}")
    if not timesteps or any(a <= b for a, b in zip(timesteps, timesteps[1:])):
        raise ValueError(f"timesteps must be non-empty and strictly descending, got {timesteps[:5]}...")
    x = initial_noise(shape, process, generator=generator, device=device, image_shape=image_shape)
    nexts = list(timesteps[1:]) + [-1]
    for i, (t, s) in enumerate(zip(timesteps, nexts)):
        if callback is not None:
            callback(i, t, x)
        pred = model_fn(x, torch.full((shape[0],), t, dtype=torch.long, device=device))
        x = joint_step(process, x, pred, t, s, method=method, eta=eta, generator=generator)
    return x


def sample_ancestral(
    model_fn: ModelFn,
    shape: tuple[int, int, int],
    process: JointDiffusion,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
) -> JointState:
    """Ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2, for every modality)."""
    timesteps = list(range(process.num_steps - 1, -1, -1))
    return sample_steps(model_fn, shape, process, timesteps=timesteps, method="ddpm",
                        generator=generator, device=device, callback=callback)


def sample_strided(
    model_fn: ModelFn,
    shape: tuple[int, int, int],
    process: JointDiffusion,
    *,
    steps: int,
    method: Method = "ddim",
    eta: float = 0.0,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
) -> JointState:
    """Strided sampling over ``steps`` <= T evenly spaced steps (respaced DDPM or DDIM(eta))."""
    timesteps = strided_timesteps(process.num_steps, steps)
    return sample_steps(model_fn, shape, process, timesteps=timesteps, method=method, eta=eta,
                        generator=generator, device=device, callback=callback)
