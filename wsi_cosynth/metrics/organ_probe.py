"""The organ probe: does a synthetic tile look like the organ it was prompted with?

A linear (multinomial logistic) classifier on Inception pool features, trained on real tiles of
labelled images, that names a tile's organ. Its accuracy on real tiles of held-out images is the
ceiling a feature-level look at one 256-px tile allows; on synthetic tiles, the share it assigns
to the prompted organ says whether the prompt steers the picture (chance: one over the organs).

Features are standardised with the training set's mean and spread; the L2 strength is chosen by
leave-one-image-out accuracy on the training images (tiles of one image are not independent, so
holding out tiles would overrate every strength).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STRENGTHS = (1e-3, 1e-2, 1e-1, 1.0)  # L2 strengths tried (per sample, on standardised features)


def _fit(x: np.ndarray, y: np.ndarray, n_classes: int, strength: float, iters: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Weights (D, K) and bias (K,) of an L2-regularised softmax regression (L-BFGS, float64)."""
    xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.int64)
    w = torch.zeros((x.shape[1], n_classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + strength * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


@dataclass(frozen=True)
class OrganProbe:
    """A fitted probe: ``organs`` in class order; standardisation and weights."""

    organs: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    strength: float

    @classmethod
    def fit(cls, features: np.ndarray, organs: list[str], groups: list[str]) -> "OrganProbe":
        """Fit on (N, D) features of real tiles with their organ and source image (``groups``)."""
        names = tuple(sorted(set(organs)))
        y = np.array([names.index(o) for o in organs])
        mean, scale = features.mean(0), features.std(0) + 1e-6
        x = (features - mean) / scale
        groups_arr = np.asarray(groups)
        best, best_acc = STRENGTHS[0], -1.0
        for strength in STRENGTHS:
            correct = 0
            for g in np.unique(groups_arr):
                train, test = groups_arr != g, groups_arr == g
                w, b = _fit(x[train], y[train], len(names), strength, iters=100)
                correct += int(((x[test] @ w + b).argmax(1) == y[test]).sum())
            acc = correct / len(y)
            if acc > best_acc:
                best, best_acc = strength, acc
        w, b = _fit(x, y, len(names), best)
        return cls(names, mean, scale, w, b, best)

    def predict(self, features: np.ndarray) -> list[str]:
        """The organ the probe names for each of (N, D) features."""
        scores = ((features - self.mean) / self.scale) @ self.weights + self.bias
        return [self.organs[i] for i in scores.argmax(1)]

    def share_named(self, features: np.ndarray, organs: list[str]) -> float:
        """Share of tiles the probe names as ``organs`` (their true or prompted organ)."""
        predicted = self.predict(features)
        return float(np.mean([p == o for p, o in zip(predicted, organs)])) if organs else float("nan")
