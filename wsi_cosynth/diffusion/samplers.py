"""Samplers for the joint process: short explicit loops over a descending list of steps.

Every sampler starts from pure noise (Gaussian image and distance, uniform label), asks
``model_fn`` for the (already guided) prediction at each step and moves from step t to the next
step s < t with the exact posterior of each modality:

- image and distance: respaced DDPM, x_s ~ q(x_s | x_t, x0_hat); DDIM with ``eta``; or the
  multistep DPM-Solver++(2M), deterministic (``dpmpp_2m``) or as its SDE (``dpmpp_2m_sde``), which
  reuses the previous step's x0_hat for a second-order step at no extra network pass;
- label: x_s ~ q(x_s | x_t, x0_hat) from the categorical posterior, exact for any s < t, whatever
  the Gaussian solver: the label chain has no ODE to integrate, and its posterior already makes a
  strided step the composition of the single steps it replaces.

The last step goes to s = -1 (clean data): the Gaussian parts return x0_hat and the label is drawn
from the predicted x_0 distribution (``final_label="sample"``) or takes its most likely class
(``"mode"``), as the Gaussian parts take their mean: with few steps the last prediction is made at
a noise level where a draw still flips scattered pixels at nucleus borders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from . import noise
from .categorical import argmax_classes
from .joint import JointDiffusion, JointPrediction, JointState, ModelFn
from .schedules import strided_timesteps

Method = Literal["ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde"]
FinalLabel = Literal["sample", "mode"]
FINAL_LABELS = ("sample", "mode")
Callback = Callable[[int, int, JointState], None]
METHODS = ("ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde")
MULTISTEP = {"dpmpp_2m": 0.0, "dpmpp_2m_sde": 1.0}  # method -> its SDE eta


@dataclass(frozen=True)
class SolverHistory:
    """What a multistep solver keeps from the step before: per Gaussian modality (x0_hat, lambda_t)."""

    image: tuple[torch.Tensor, torch.Tensor]
    distance: tuple[torch.Tensor, torch.Tensor]


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
    history: SolverHistory | None = None,
    final_label: FinalLabel = "sample",
) -> tuple[JointState, SolverHistory | None]:
    """One reverse step t -> s (< t) for all three modalities.

    ``history``: a multistep method's memory of the step before (None on its first step); the
    returned one is for the next step (None for single-step methods).
    """
    b = x_t.label.shape[0]
    t_b = torch.full((b,), t, dtype=torch.long)
    s_b = torch.full((b,), s, dtype=torch.long)
    z_i = noise.randn(x_t.image.shape, generator, x_t.image.device)
    z_d = noise.randn(x_t.distance.shape, generator, x_t.distance.device)
    new_history = None
    if method == "ddpm":
        image = process.image.ddpm_step(x_t.image, pred.eps_image, t_b, s_b, z_i)
        distance = process.distance.ddpm_step(x_t.distance, pred.eps_distance, t_b, s_b, z_d)
    elif method == "ddim":
        image = process.image.ddim_step(x_t.image, pred.eps_image, t_b, s_b, z_i, eta=eta)
        distance = process.distance.ddim_step(x_t.distance, pred.eps_distance, t_b, s_b, z_d, eta=eta)
    else:
        sde_eta = MULTISTEP[method]
        image, mem_i = process.image.dpm_solver_step(x_t.image, pred.eps_image, t_b, s_b, z_i, eta=sde_eta,
                                                     previous=history.image if history else None)
        distance, mem_d = process.distance.dpm_solver_step(x_t.distance, pred.eps_distance, t_b, s_b, z_d, eta=sde_eta,
                                                           previous=history.distance if history else None)
        new_history = SolverHistory(mem_i, mem_d)
    if s < 0 and final_label == "mode":
        label = argmax_classes(pred.log_x0_label.float())
    else:
        label = process.label.step(pred.log_x0_label.float(), x_t.label, t_b, s_b, generator)
    return JointState(image, distance, label), new_history


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
    final_label: FinalLabel = "sample",
) -> JointState:
    """Run the reverse chain over ``timesteps`` (strictly descending, first = T-1) to clean data.

    ``callback(i, t, x_t)`` is called before each of the ``len(timesteps)`` network evaluations.
    ``image_shape``: the image part's (C, h, w) when it is not (3, H, W) (see :func:`initial_noise`).
    """
    if method not in METHODS:
        raise ValueError(f"sampler method must be one of {METHODS}, got {method!r}")
    if final_label not in FINAL_LABELS:
        raise ValueError(f"final_label must be one of {FINAL_LABELS}, got {final_label!r}")
    if not timesteps or any(a <= b for a, b in zip(timesteps, timesteps[1:])):
        raise ValueError(f"timesteps must be non-empty and strictly descending, got {timesteps[:5]}...")
    x = initial_noise(shape, process, generator=generator, device=device, image_shape=image_shape)
    nexts = list(timesteps[1:]) + [-1]
    history = None
    for i, (t, s) in enumerate(zip(timesteps, nexts)):
        if callback is not None:
            callback(i, t, x)
        pred = model_fn(x, torch.full((shape[0],), t, dtype=torch.long, device=device))
        x, history = joint_step(process, x, pred, t, s, method=method, eta=eta, generator=generator, history=history,
                                final_label=final_label)
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
    """Strided sampling over ``steps`` <= T evenly spaced steps (any of :data:`METHODS`)."""
    timesteps = strided_timesteps(process.num_steps, steps)
    return sample_steps(model_fn, shape, process, timesteps=timesteps, method=method, eta=eta,
                        generator=generator, device=device, callback=callback)
