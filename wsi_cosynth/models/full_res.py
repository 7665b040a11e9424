"""The optional full-resolution shallow path of the denoiser (``model.full_res_channels``).

An unshuffled U-Net (stem factor f) sees each f x f pixel patch only as channels of one feature
vector, so everything finer than the patch (a nuclear boundary, chromatin grain, a fibre) must
pass the stem's squeeze and come back through the head's one 3x3 conv. This path gives that
detail a route at full resolution, as the first and last level of an ordinary U-Net would, at a
small width so it stays cheap on a CPU:

    x_t (full res) --conv--> F ---------------------------------+
                             |                                  |
                 unshuffle + 1x1 (zero init) -> added to the body's input features
                                                                |
    body output --1x1 + shuffle--> U  --cat(U, F)--> ResBlock --> norm, SiLU, conv (zero init)
                                                                      -> added to the output

Both joins start at zero, so a model that gains this path (``--init-from`` a model without it)
computes exactly what it computed before until training moves them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .unet import ResBlock


def _zero(module: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


class FullResolutionPath(nn.Module):
    """Shallow full-resolution encoder/decoder level around a body working at 1/``factor``."""

    def __init__(self, *, in_channels: int, out_channels: int, channels: int, factor: int, body_in: int,
                 body_out: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.factor = factor
        self.encode = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.to_body = _zero(nn.Conv2d(channels * factor * factor, body_in, 1))
        self.from_body = nn.Conv2d(body_out, channels * factor * factor, 1)
        self.block = ResBlock(2 * channels, channels, emb_dim, groups=groups, dropout=0.0)
        self.norm = nn.GroupNorm(groups, channels)
        self.out = _zero(nn.Conv2d(channels, out_channels, 3, padding=1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) noisy input -> (B, channels, H, W) full-resolution features."""
        return self.encode(x)

    def body_input(self, features: torch.Tensor) -> torch.Tensor:
        """What the full-resolution features add to the body's (B, body_in, H/f, W/f) input."""
        return self.to_body(F.pixel_unshuffle(features, self.factor))

    def output(self, body_features: torch.Tensor, features: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """(B, out, H, W): what this path adds to the denoiser's full-resolution output."""
        up = F.pixel_shuffle(self.from_body(body_features), self.factor)
        h = self.block(torch.cat([up, features], dim=1), emb)
        return self.out(F.silu(self.norm(h)))
