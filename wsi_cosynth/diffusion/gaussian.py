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

    def half_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) float64 lambda_t = log(alpha_t / sigma_t) (+inf at t = -1, clean data)."""
        abar = self.abar(t)
        return 0.5 * (abar.log() - (1 - abar).log())

    def dpm_solver_step(
        self,
        x_t: torch.Tensor,
        eps: torch.Tensor,
        t: torch.Tensor,
        s: torch.Tensor,
        noise: torch.Tensor,
        *,
        previous: tuple[torch.Tensor, torch.Tensor] | None,
        eta: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) from t to s; ``eta`` = 1 is its SDE form.

        With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma), h = lambda_s - lambda_t
        and D the clean-data estimate (second order when ``previous`` = (x0_hat at t', lambda_t') of
        the step before, r = (lambda_t - lambda_t') / h >= 1/2, D = x0 + (x0 - x0') / (2 r)):

            x_s = sigma_s / sigma_t e^{-eta h} x_t + alpha_s (1 - e^{-(1 + eta) h}) D + sigma_s sqrt(1 - e^{-2 eta h}) z

        eta = 0 is the deterministic multistep solver; eta = 1 with first order is exactly the DDPM
        posterior step (:meth:`ddpm_step`). At s = -1 (clean data) the step returns x0_hat.
        Returns (x_s, (x0_hat, lambda_t)) for the next step's ``previous``.
        """
        x0 = self.predict_x0(x_t, t, eps)
        lam_t, lam_s = self.half_log_snr(t), self.half_log_snr(s)
        if bool((s < 0).all()):
            return x0, (x0, lam_t)
        d = x0
        h = lam_s - lam_t
        if previous is not None:
            x0_prev, lam_prev = previous
            r = (lam_t - lam_prev) / h
            # Below r = 1/2 the correction extrapolates x0_hat over more than twice the log-SNR
            # span it was measured on (e.g. linspace's last jump to t = 0, h ~ 5x the step before)
            # and overshoots; such a step stays first order, like DPM-Solver's lower-order final.
            second_order = batch_broadcast((r >= 0.5).to(x0.dtype) * 0.5 / r, x0)
            d = x0 + second_order * (x0 - x0_prev)
        abar_t, abar_s = self.abar(t), self.abar(s)
        sigma_ratio = ((1 - abar_s) / (1 - abar_t)).sqrt()
        x_coef = sigma_ratio * torch.exp(-eta * h)
        d_coef = abar_s.sqrt() * -torch.expm1(-(1 + eta) * h)
        z_coef = (1 - abar_s).sqrt() * (-torch.expm1(-2 * eta * h)).clamp(min=0).sqrt()
        x_s = batch_broadcast(x_coef, x_t) * x_t + batch_broadcast(d_coef, x_t) * d + batch_broadcast(z_coef, x_t) * noise
        return x_s, (x0, lam_t)

    @staticmethod
    def loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """(B,) mean squared error of the predicted noise per sample."""
        return ((eps_pred.float() - eps.float()) ** 2).flatten(1).mean(1)
