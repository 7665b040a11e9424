"""Gaussian diffusion with epsilon prediction (Ho et al. 2020) and its strided steps.

All functions take the schedule's ``alpha_bar`` (T,) and step indices ``t`` (B,) in -1..T-1
(``-1`` = clean data). Data tensors are (B, C, H, W) float32, scaled to roughly [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .schedules import CosineSchedule, alpha_bar_at


def batch_broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) in ``like``'s dtype and device."""
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


@dataclass(frozen=True)
class PosteriorGaussian:
    """q(x_s | x_t, x_0) = N(mean, var): mean (B, C, H, W), var (B, 1, 1, 1)."""

    mean: torch.Tensor
    var: torch.Tensor


class GaussianDiffusion:
    """Forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) and its posteriors."""

    def __init__(self, schedule: CosineSchedule, *, clip_x0: bool = True) -> None:
        self.schedule = schedule
        self.num_steps = schedule.num_steps
        self.alpha_bar = schedule.alpha_bar()
        self.clip_x0 = clip_x0

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) float64 alpha_bar at steps ``t`` (1 at t = -1)."""
        return alpha_bar_at(self.alpha_bar, t.cpu())

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps  (eq. 4 of Ho et al.)."""
        abar = self.abar(t)
        return batch_broadcast(abar.sqrt(), x0) * x0 + batch_broadcast((1 - abar).sqrt(), x0) * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), clipped to [-1, 1] if configured."""
        abar = self.abar(t)
        x0 = (x_t - batch_broadcast((1 - abar).sqrt(), x_t) * eps) / batch_broadcast(abar.sqrt(), x_t)
        return x0.clamp(-1.0, 1.0) if self.clip_x0 else x0

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise consistent with ``x_t`` and ``x0`` at step ``t``."""
        abar = self.abar(t)
        return (x_t - batch_broadcast(abar.sqrt(), x_t) * x0) / batch_broadcast((1 - abar).sqrt(), x_t)

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> PosteriorGaussian:
        """q(x_s | x_t, x_0) for any s < t (eqs. 6-7 of Ho et al. with the strided beta).

        With alpha_{t|s} = abar_t / abar_s and beta_{t|s} = 1 - alpha_{t|s}:
        mean = sqrt(abar_s) beta_{t|s} / (1 - abar_t) x_0 + sqrt(alpha_{t|s}) (1 - abar_s) / (1 - abar_t) x_t,
        var = (1 - abar_s) / (1 - abar_t) beta_{t|s}.
        """
        abar_t, abar_s = self.abar(t), self.abar(s)
        alpha_ts = abar_t / abar_s
        beta_ts = 1 - alpha_ts
        c0 = abar_s.sqrt() * beta_ts / (1 - abar_t)
        ct = alpha_ts.sqrt() * (1 - abar_s) / (1 - abar_t)
        var = (1 - abar_s) / (1 - abar_t) * beta_ts
        return PosteriorGaussian(mean=batch_broadcast(c0, x0) * x0 + batch_broadcast(ct, x_t) * x_t, var=batch_broadcast(var, x0))

    def ddpm_step(
        self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, s: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Respaced DDPM: x_s ~ q(x_s | x_t, x0_hat) with x0_hat from the predicted noise."""
        post = self.posterior(self.predict_x0(x_t, t, eps), x_t, t, s)
        return post.mean + post.var.sqrt() * noise

    def ddim_step(
        self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, s: torch.Tensor, noise: torch.Tensor, *, eta: float
    ) -> torch.Tensor:
        """DDIM (Song et al. 2021, eq. 12): x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z.

        sigma = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s); eta = 0 is deterministic,
        eta = 1 has the DDPM posterior variance.
        """
        x0 = self.predict_x0(x_t, t, eps)
        eps = self.predict_eps(x_t, t, x0)  # consistent with the clipped x0
        abar_t, abar_s = self.abar(t), self.abar(s)
        sigma = eta * ((1 - abar_s) / (1 - abar_t)).sqrt() * (1 - abar_t / abar_s).sqrt()
        dir_coef = (1 - abar_s - sigma**2).clamp(min=0).sqrt()
        return batch_broadcast(abar_s.sqrt(), x0) * x0 + batch_broadcast(dir_coef, x0) * eps + batch_broadcast(sigma, x0) * noise

    @staticmethod
    def loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """(B,) mean squared error of the predicted noise per sample."""
        return ((eps_pred.float() - eps.float()) ** 2).flatten(1).mean(1)
