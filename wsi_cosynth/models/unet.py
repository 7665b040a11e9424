"""U-Net building blocks and body (DDPM/ADM style): timestep embedding, residual blocks with
FiLM conditioning, self-attention at low resolution.

Conditioning: one vector per sample, the timestep embedding plus the projected text embedding,
modulates every residual block by FiLM (per-channel scale and shift). We chose FiLM over
cross-attention because the prompt is a fixed template whose only content is the tissue type and
the SET of classes present: a single global vector carries all of it, and FiLM costs one linear
layer per block instead of an attention over text tokens at every resolution (the dominant cost at
64 x 64 on a CPU). Spatial information comes from the point map, not the text.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) steps -> (B, dim) sinusoidal embedding (Vaswani et al. 2017, as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with FiLM (1 + scale, shift) from the conditioning vector."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, *, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over all pixels of a feature map, residual."""

    def __init__(self, ch: int, *, heads: int, groups: int) -> None:
        super().__init__()
        if ch % heads:
            raise ValueError(f"attention channels {ch} not divisible by heads {heads}")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNetBody(nn.Module):
    """Encoder-decoder with skip connections over features of ``channels`` channels.

    Parameters
    ----------
    channels : width at full resolution; level i has ``channels * channel_mults[i]``.
    size : spatial size (pixels) of the input features, to place attention.
    attn_resolutions : feature sizes at which a self-attention block follows each res block.
    """

    def __init__(
        self,
        *,
        channels: int,
        channel_mults: tuple[int, ...],
        num_res_blocks: int,
        emb_dim: int,
        size: int,
        attn_resolutions: tuple[int, ...],
        heads: int,
        groups: int,
        dropout: float,
    ) -> None:
        super().__init__()
        kw = dict(groups=groups, dropout=dropout)
        self.down = nn.ModuleList()
        skip_ch = [channels]
        ch, res = channels, size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                blocks = nn.ModuleList([ResBlock(ch, channels * mult, emb_dim, **kw)])
                ch = channels * mult
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch, heads=heads, groups=groups))
                self.down.append(blocks)
                skip_ch.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skip_ch.append(ch)
                res //= 2
        self.mid = nn.ModuleList([
            ResBlock(ch, ch, emb_dim, **kw), AttnBlock(ch, heads=heads, groups=groups), ResBlock(ch, ch, emb_dim, **kw)
        ])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for i in range(num_res_blocks + 1):
                blocks = nn.ModuleList([ResBlock(ch + skip_ch.pop(), channels * mult, emb_dim, **kw)])
                ch = channels * mult
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch, heads=heads, groups=groups))
                if level > 0 and i == num_res_blocks:
                    blocks.append(Upsample(ch))
                    res *= 2
                self.up.append(blocks)
        self.out_channels = ch

    @staticmethod
    def _run(blocks: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            h = block(h, emb) if isinstance(block, (ResBlock, AttnBlock)) else block(h)
        return h

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """(B, channels, S, S) features and (B, emb_dim) conditioning -> (B, channels, S, S)."""
        skips = [h]
        for blocks in self.down:
            h = self._run(blocks, h, emb)
            skips.append(h)
        h = self._run(self.mid, h, emb)
        for blocks in self.up:
            h = self._run(blocks, torch.cat([h, skips.pop()], dim=1), emb)
        return h
