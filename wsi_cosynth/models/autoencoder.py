"""A small image autoencoder for latent joint diffusion: an RGB tile <-> a latent at 1/factor size.

Why: the pixel-space denoiser sees each 4 x 4 cell of the image as 48 numbers, most of which are
texture the Inception features (and a pathologist) barely weigh, and spends its capacity on them.
An autoencoder trained on the tiles first compresses a cell to ``latent_channels`` numbers (4:
12x), so the joint diffusion models image latent + label + distance and the decoder adds the
detail back, as latent-diffusion peers do (PathLDM; HistoSmith's single-stage latent image-label
generation). The label and distance map stay in pixel space (categorical and Gaussian diffusion
at full resolution, as the paper), so instances and layouts are unchanged.

Both halves are cheap on a CPU: the encoder is a pixel-unshuffle stem and residual blocks at
1/factor size (it runs on every training batch, without gradients); the decoder mirrors it and
adds one residual block at full resolution for the sub-cell detail. ``latent_scale`` (a buffer,
set from the training tiles after training) makes the latents unit-variance for the diffusion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AutoencoderConfig


class PlainResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, residual; no conditioning."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class ImageAutoencoder(nn.Module):
    """(B, 3, H, W) image in [-1, 1] <-> (B, latent_channels, H / factor, W / factor) latent."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        f, ch, g = config.factor, config.channels, config.groups
        self.factor = f
        self.latent_channels = config.latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3 * f * f, ch, 3, padding=1),
            *[PlainResBlock(ch, g) for _ in range(config.blocks)],
            nn.GroupNorm(g, ch), nn.SiLU(), nn.Conv2d(ch, config.latent_channels, 3, padding=1),
        )
        fr = config.full_res_channels
        self.decoder_body = nn.Sequential(
            nn.Conv2d(config.latent_channels, ch, 3, padding=1),
            *[PlainResBlock(ch, g) for _ in range(config.blocks)],
            nn.GroupNorm(g, ch), nn.SiLU(), nn.Conv2d(ch, fr * f * f, 3, padding=1),
        )
        self.decoder_full = nn.Sequential(
            PlainResBlock(fr, g), nn.GroupNorm(g, fr), nn.SiLU(), nn.Conv2d(fr, 3, 3, padding=1),
        )
        # Multiplies raw encoder outputs to unit variance (set after training; 1 until then).
        self.register_buffer("latent_scale", torch.ones(()))

    def encode_raw(self, image: torch.Tensor) -> torch.Tensor:
        """The encoder's output before scaling (what the decoder is trained on)."""
        return self.encoder(F.pixel_unshuffle(image, self.factor))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder_full(F.pixel_shuffle(self.decoder_body(z), self.factor))

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> unit-variance latent."""
        return self.encode_raw(image) * self.latent_scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Unit-variance latent -> image, roughly in [-1, 1] (clamp before converting)."""
        return self.decode_raw(latent / self.latent_scale)
