"""The joint process: image and distance map (Gaussian) and semantic label (categorical),
noised at one shared step t, with the weighted loss L = w_i L_image + w_d L_dist + w_l L_label
(9 / 1 / 3 in the paper).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import noise
from .categorical import CategoricalDiffusion, index_to_log_onehot
from .gaussian import GaussianDiffusion
from .schedules import CosineSchedule


@dataclass(frozen=True)
class JointState:
    """One point of the joint chain.

    image : (B, 3, H, W) float32, data in [-1, 1]
    distance : (B, 1, H, W) float32, data in [-1, 1] (distance map d in [0, 1] as 2d - 1)
    label : (B, H, W) int64 in 0..K-1 (0 background)
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
    ) -> None:
        if not image.num_steps == distance.num_steps == label.num_steps:
            raise ValueError(
                f"all modalities share one step index; got T = {image.num_steps}, {distance.num_steps}, {label.num_steps}"
            )
        self.num_steps = image.num_steps
        self.num_classes = num_classes
        self.image = GaussianDiffusion(image)
        self.distance = GaussianDiffusion(distance)
        self.label = CategoricalDiffusion(label, num_classes)
        self.weights = weights

    def q_sample(
        self, x0: JointState, t: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[JointState, torch.Tensor, torch.Tensor]:
        """(x_t, eps_image, eps_distance): every modality noised to the same step ``t``."""
        eps_i = noise.randn(x0.image.shape, generator, x0.image.device)
        eps_d = noise.randn(x0.distance.shape, generator, x0.distance.device)
        log_l0 = index_to_log_onehot(x0.label, self.num_classes)
        x_t = JointState(
            self.image.q_sample(x0.image, t, eps_i),
            self.distance.q_sample(x0.distance, t, eps_d),
            self.label.q_sample(log_l0, t, generator),
        )
        return x_t, eps_i, eps_d

    def losses(
        self, model_fn: ModelFn, x0: JointState, t: torch.Tensor, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Scalar losses ``image``, ``distance``, ``label`` (each a batch mean) and their weighted ``total``."""
        x_t, eps_i, eps_d = self.q_sample(x0, t, generator)
        pred = model_fn(x_t, t)
        log_l0 = index_to_log_onehot(x0.label, self.num_classes)
        out = {
            "image": GaussianDiffusion.loss(pred.eps_image, eps_i).mean(),
            "distance": GaussianDiffusion.loss(pred.eps_distance, eps_d).mean(),
            "label": self.label.loss(log_l0, x_t.label, t, pred.log_x0_label.float(), ce_weight=self.weights.label_ce).mean(),
        }
        w = self.weights
        out["total"] = w.image * out["image"] + w.distance * out["distance"] + w.label * out["label"]
        return out
