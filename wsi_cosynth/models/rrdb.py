"""RRDB point-map encoder (ESRGAN's residual-in-residual dense blocks, Wang et al. 2018).

The point map (one pixel per nucleus centroid, one channel per class) is encoded once per sample;
its features are ADDED to the denoiser's input features at every step (docs/METHOD.md).
"""

from __future__ import annotations

import torch
from torch import nn

RESIDUAL_SCALE = 0.2  # ESRGAN's residual scaling, keeps deep dense stacks stable


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing all earlier outputs; the last one is a scaled residual."""

    def __init__(self, ch: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(ch + i * growth, growth, 3, padding=1) for i in range(4)] + [nn.Conv2d(ch + 4 * growth, ch, 3, padding=1)]
        )
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(self.act(conv(torch.cat(feats, dim=1))))
        return x + RESIDUAL_SCALE * self.convs[-1](torch.cat(feats, dim=1))


class RRDB(nn.Module):
    """Three residual dense blocks inside one scaled residual."""

    def __init__(self, ch: int, growth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(ch, growth) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.blocks(x)


class PointEncoder(nn.Module):
    """(B, in_ch, S, S) point map -> (B, out_ch, S, S) features: conv, RRDB trunk, conv."""

    def __init__(self, in_ch: int, out_ch: int, *, channels: int, growth: int, num_blocks: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(in_ch, channels, 3, padding=1)
        self.trunk = nn.Sequential(*(RRDB(channels, growth) for _ in range(num_blocks)))
        self.trunk_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, out_ch, 3, padding=1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        fea = self.first(points)
        return self.out(fea + self.trunk_conv(self.trunk(fea)))
