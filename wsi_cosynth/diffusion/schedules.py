"""Cosine noise schedules (Nichol & Dhariwal 2021), one per modality.

Indexing: diffusion steps are ``t = 0 .. T-1``; ``t = 0`` is the first noising step and
``alpha_bar[t]`` is the cumulative signal fraction after it. ``t = -1`` stands for clean data
(``alpha_bar = 1``); samplers step from ``t`` to any ``s < t`` including ``s = -1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class CosineSchedule:
    """A discrete cosine schedule of ``num_steps`` steps.

    Parameters
    ----------
    num_steps : T, number of diffusion steps (1000 in the paper).
    offset : the small ``s`` of ``f(t) = cos(((t/T + s) / (1 + s)) * pi/2) ** 2`` that keeps
        beta_0 away from 0.
    max_beta : upper clip on each beta (avoids a singular last step).
    """

    num_steps: int = 1000
    offset: float = 0.008
    max_beta: float = 0.999

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if not 0.0 < self.max_beta < 1.0:
            raise ValueError(f"max_beta must be in (0, 1), got {self.max_beta}")

    def betas(self) -> torch.Tensor:
        """(T,) float64 in (0, max_beta]: the per-step noise fractions beta_t."""
        steps = torch.arange(self.num_steps + 1, dtype=torch.float64) / self.num_steps
        f = torch.cos((steps + self.offset) / (1 + self.offset) * math.pi / 2) ** 2
        betas = 1.0 - f[1:] / f[:-1]
        return betas.clamp(min=1e-8, max=self.max_beta)

    def alpha_bar(self) -> torch.Tensor:
        """(T,) float64 in (0, 1), decreasing: alpha_bar[t] = prod_{i<=t} (1 - beta_i)."""
        return torch.cumprod(1.0 - self.betas(), dim=0)


def alpha_bar_at(alpha_bar: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """alpha_bar[t] for a (B,) long tensor ``t`` in -1..T-1, with alpha_bar[-1] = 1 (clean data)."""
    padded = torch.cat([alpha_bar.new_ones(1), alpha_bar])
    return padded[t.long() + 1]


Spacing = Literal["linspace", "trailing"]
SPACINGS = ("linspace", "trailing")


def strided_timesteps(num_steps: int, num_sample_steps: int, spacing: Spacing = "linspace") -> list[int]:
    """Descending step indices ``t_N > ... > t_1`` at which a strided sampler evaluates the network.

    Both spacings start at ``T-1`` (pure noise) and are even in t; the sampler's last move is from
    ``t_1`` to clean data (t = -1):

    - ``"linspace"``: ``t_1 = 0``, so the last network pass sees almost clean data (abar_0 ~ 1) and
      barely changes it; ``num_sample_steps == num_steps`` gives every step (the ancestral chain);
    - ``"trailing"``: ``t_i = round(T i / N) - 1``, ``t_1 = T/N - 1`` (Lin et al. 2024): every pass
      removes a like share of the noise, which matters when there are only a few.
    """
    if not 1 <= num_sample_steps <= num_steps:
        raise ValueError(f"sampling steps must be in 1..{num_steps}, got {num_sample_steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"timestep spacing must be one of {SPACINGS}, got {spacing!r}")
    if num_sample_steps == 1:
        return [num_steps - 1]
    if spacing == "trailing":
        ts = (torch.arange(num_sample_steps, 0, -1, dtype=torch.float64) * num_steps / num_sample_steps).round().long() - 1
        return [int(v) for v in ts]
    ts = torch.linspace(0, num_steps - 1, num_sample_steps, dtype=torch.float64).round().long()
    return sorted(set(int(v) for v in ts), reverse=True)
