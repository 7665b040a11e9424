"""The joint process: image and distance map (Gaussian) and semantic label (categorical),
noised at one shared step t, with the weighted loss L = w_i L_image + w_d L_dist + w_l L_label
(9 / 1 / 3 in the paper).

The network's Gaussian outputs are in one of two parameterisations (``prediction``):

- ``"eps"``: the noise eps (Ho et al. 2020), as the paper;
- ``"v"``: the velocity v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022), well
  conditioned at every step: at high noise an eps-network's x_0 estimate divides its error by
  sqrt(abar_t) -> 0, which a few-step sampler commits to the image as grain.

Either way the samplers and guidance see noise predictions: :meth:`JointDiffusion.to_eps`
converts (eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v). ``min_snr_gamma`` weights each example's
Gaussian losses by min(SNR_t, gamma) / SNR_t for eps, / (SNR_t + 1) for v (Min-SNR, Hang et al.
2023), so that no band of noise levels dominates the gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from . import noise
from .categorical import CategoricalDiffusion, log_x0_with_unknown
from .gaussian import GaussianDiffusion, batch_broadcast
from .schedules import CosineSchedule


@dataclass(frozen=True)
class JointState:
    """One point of the joint chain.

    image : (B, 3, H, W) float32, data in [-1, 1]
    distance : (B, 1, H, W) float32, data in [-1, 1] (distance map d in [0, 1] as 2d - 1)
    label : (B, H, W) int64 in 0..K-1 (0 background); in training data also K, a nucleus pixel
        of unknown class (diffusion/categorical.py, "Partial labels")
    """

    image: torch.Tensor
    distance: torch.Tensor
    label: torch.Tensor

    def repeat(self, n: int) -> "JointState":
        """The batch stacked ``n`` times along dim 0 (for one batched guided forward)."""
        return JointState(self.image.repeat(n, 1, 1, 1), self.distance.repeat(n, 1, 1, 1), self.label.repeat(n, 1, 1))


@dataclass(frozen=True)
class JointPrediction:
    """What the denoiser predicts: eps_image (B, 3, H, W), eps_distance (B, 1, H, W),
    log_x0_label (B, K, H, W) normalised log-probabilities of the clean label."""

    eps_image: torch.Tensor
    eps_distance: torch.Tensor
    log_x0_label: torch.Tensor

    def chunk(self, n: int) -> list["JointPrediction"]:
        parts = zip(self.eps_image.chunk(n), self.eps_distance.chunk(n), self.log_x0_label.chunk(n))
        return [JointPrediction(*p) for p in parts]


ModelFn = Callable[[JointState, torch.Tensor], JointPrediction]
Prediction = Literal["eps", "v"]
PREDICTIONS = ("eps", "v")


@dataclass(frozen=True)
class LossWeights:
    image: float = 9.0
    distance: float = 1.0
    label: float = 3.0
    label_ce: float = 1.0  # auxiliary x0 cross-entropy inside the label loss (see CategoricalDiffusion.loss)


class JointDiffusion:
    """Composes two Gaussian processes and one categorical process over a shared step index."""

    def __init__(
        self,
        *,
        image: CosineSchedule,
        distance: CosineSchedule,
        label: CosineSchedule,
        num_classes: int,
        weights: LossWeights = LossWeights(),
        prediction: Prediction = "eps",
        min_snr_gamma: float | None = None,
        clip_image_x0: bool = True,
    ) -> None:
        """``clip_image_x0``: clip the samplers' clean-image estimate to [-1, 1], right for pixels;
        a latent image is unit-variance (a third of its values lie outside [-1, 1]), so clipping
        it would squash every step's estimate toward grey and blur the decoded tile."""
        if not image.num_steps == distance.num_steps == label.num_steps:
            raise ValueError(
                f"all modalities share one step index; got T = {image.num_steps}, {distance.num_steps}, {label.num_steps}"
            )
        self.num_steps = image.num_steps
        self.num_classes = num_classes
        self.image = GaussianDiffusion(image, clip_x0=clip_image_x0)
        self.distance = GaussianDiffusion(distance)
        self.label = CategoricalDiffusion(label, num_classes)
        self.weights = weights
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {min_snr_gamma}")
        self.prediction = prediction
        self.min_snr_gamma = min_snr_gamma

    def to_eps(self, raw: JointPrediction, x_t: JointState, t: torch.Tensor) -> JointPrediction:
        """Noise predictions from the network's raw outputs (unchanged for ``"eps"``)."""
        if self.prediction == "eps":
            return raw

        def eps(process: GaussianDiffusion, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            abar = batch_broadcast(process.abar(t), v)
            return (1 - abar).sqrt() * x + abar.sqrt() * v

        return JointPrediction(eps(self.image, x_t.image, raw.eps_image),
                               eps(self.distance, x_t.distance, raw.eps_distance), raw.log_x0_label)

    def _target(self, process: GaussianDiffusion, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction == "eps":
            return eps
        abar = batch_broadcast(process.abar(t), x0)
        return abar.sqrt() * eps - (1 - abar).sqrt() * x0

    def _snr_weight(self, process: GaussianDiffusion, t: torch.Tensor) -> torch.Tensor | None:
        """(B,) Min-SNR weights, or None without ``min_snr_gamma``."""
        if self.min_snr_gamma is None:
            return None
        abar = process.abar(t)
        snr = abar / (1 - abar)
        denom = snr if self.prediction == "eps" else snr + 1
        return (snr.clamp(max=self.min_snr_gamma) / denom).float()

    def q_sample(
        self, x0: JointState, t: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[JointState, torch.Tensor, torch.Tensor]:
        """(x_t, eps_image, eps_distance): every modality noised to the same step ``t``."""
        eps_i = noise.randn(x0.image.shape, generator, x0.image.device)
        eps_d = noise.randn(x0.distance.shape, generator, x0.distance.device)
        log_l0, _ = log_x0_with_unknown(x0.label, self.num_classes)
        x_t = JointState(
            self.image.q_sample(x0.image, t, eps_i),
            self.distance.q_sample(x0.distance, t, eps_d),
            self.label.q_sample(log_l0, t, generator),
        )
        return x_t, eps_i, eps_d

    def losses(
        self, model_fn: ModelFn, x0: JointState, t: torch.Tensor, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Scalar losses ``image``, ``distance``, ``label`` (each a batch mean) and their weighted ``total``.

        ``model_fn`` returns the network's raw outputs (in the ``prediction`` parameterisation);
        the Gaussian losses are the (Min-SNR weighted) mean squared errors against their targets.
        """
        x_t, eps_i, eps_d = self.q_sample(x0, t, generator)
        pred = model_fn(x_t, t)
        log_l0, unknown = log_x0_with_unknown(x0.label, self.num_classes)

        def gaussian_loss(process: GaussianDiffusion, raw: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            per_sample = GaussianDiffusion.loss(raw, self._target(process, x, eps, t))
            w = self._snr_weight(process, t)
            return (per_sample * w.to(per_sample.device) if w is not None else per_sample).mean()

        out = {
            "image": gaussian_loss(self.image, pred.eps_image, x0.image, eps_i),
            "distance": gaussian_loss(self.distance, pred.eps_distance, x0.distance, eps_d),
            "label": self.label.loss(log_l0, x_t.label, t, pred.log_x0_label.float(), ce_weight=self.weights.label_ce,
                                     unknown=unknown).mean(),
        }
        w = self.weights
        out["total"] = w.image * out["image"] + w.distance * out["distance"] + w.label * out["label"]
        return out
