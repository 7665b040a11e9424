"""Classifier-free guidance (Ho & Salimans 2022) for the joint prediction.

eps = eps_u + w (eps_c - eps_u) for the image and distance noise; the label is combined in log
space, log p = log p_u + w (log p_c - log p_u), then renormalised by a log-softmax (the cleaner form
used by VQ-Diffusion). w = 1 gives the conditional prediction, w = 0 the unconditional one.
"""

from __future__ import annotations

import torch

from .joint import JointPrediction, JointState, ModelFn


def combine_guidance(cond: JointPrediction, uncond: JointPrediction, scale: float) -> JointPrediction:
    """The guided prediction from a conditional and an unconditional one."""
    log_p = uncond.log_x0_label + scale * (cond.log_x0_label - uncond.log_x0_label)
    return JointPrediction(
        eps_image=uncond.eps_image + scale * (cond.eps_image - uncond.eps_image),
        eps_distance=uncond.eps_distance + scale * (cond.eps_distance - uncond.eps_distance),
        log_x0_label=torch.log_softmax(log_p, dim=1),
    )


def guided_model_fn(paired_fn: ModelFn, scale: float) -> ModelFn:
    """Wrap a network evaluated on a doubled batch into a guided model function.

    ``paired_fn`` receives the state stacked twice (first half conditional, second half with the
    text dropped) and must return predictions in the same order: both passes are ONE forward.
    """

    def model_fn(x_t: JointState, t: torch.Tensor) -> JointPrediction:
        cond, uncond = paired_fn(x_t.repeat(2), t.repeat(2)).chunk(2)
        return combine_guidance(cond, uncond, scale)

    return model_fn
