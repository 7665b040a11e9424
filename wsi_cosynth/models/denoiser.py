"""The full conditional denoiser: (x_t, t, text, point map) -> joint prediction.

Input: the noisy image (3), distance map (1) and label as one-hot over K = n_classes + 1 classes
(incl. background, scaled to {-1, 1}) are concatenated, pixel-unshuffled by ``unshuffle`` (a
lossless space-to-depth stem so the U-Net works at tile_size / unshuffle) and projected to
``channels``. The RRDB features of the point map are added to these input features. The U-Net
body is conditioned on the timestep embedding plus the projected text embedding (FiLM). The head
predicts image noise (3), distance noise (1) and x_0 label logits (K), shuffled back to full size.
With ``full_res_channels`` > 0 a shallow full-resolution path (models/full_res.py) wraps the body.

A latent model (``image_latent`` set) receives the image as its autoencoder's latent, already at
tile_size / unshuffle: the latent's channels come first, then the unshuffled distance and label,
and the head's first ``latent_channels`` outputs are the latent's prediction at that size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.joint import JointPrediction, JointState
from .config import ModelConfig
from .full_res import FullResolutionPath
from .rrdb import PointEncoder
from .unet import UNetBody, timestep_embedding


def unknown_class_id(n_classes: int) -> int:
    """The value of a nucleus of unknown class in a model's point map and label target: K + 1,
    one past the last class (0 is background / no point)."""
    return n_classes + 1


def point_map_channels(points: torch.Tensor, n_classes: int, *, unknown: bool = False) -> torch.Tensor:
    """(B, H, W) int64 point map (0 = no nucleus, k = a class-k centroid, and with ``unknown``
    K + 1 = a centroid of unknown class) -> (B, K (+ 1), H, W) float one-hot, background dropped."""
    onehot = F.one_hot(points.long(), n_classes + 1 + int(unknown)).permute(0, 3, 1, 2).float()
    return onehot[:, 1:]


class Denoiser(nn.Module):
    """The joint denoiser network for tiles of ``tile_size`` with ``n_classes`` nucleus classes."""

    def __init__(self, config: ModelConfig, *, n_classes: int, tile_size: int, text_dim: int) -> None:
        super().__init__()
        self.config = config
        self.n_classes = n_classes
        self.num_labels = n_classes + 1
        f = config.unshuffle
        self.unshuffle = f
        latent = config.image_latent
        # Channels of the image part at the U-Net's resolution: its latent, or its unshuffled pixels.
        self.image_channels = latent.latent_channels if latent is not None else 3 * f * f
        in_ch = out_ch = self.image_channels + (1 + self.num_labels) * f * f
        ch = config.channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.text_proj = nn.Sequential(nn.Linear(text_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # Stands for "no text" when the prompt is dropped (training) or for the unconditional pass.
        self.null_text = nn.Parameter(torch.zeros(text_dim))
        self.stem = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.point_channels = n_classes + int(config.unknown_class)
        self.points = PointEncoder(self.point_channels * f * f, ch, channels=config.rrdb_channels,
                                   growth=config.rrdb_growth, num_blocks=config.rrdb_blocks)
        self.body = UNetBody(
            channels=ch, channel_mults=config.channel_mults, num_res_blocks=config.num_res_blocks,
            emb_dim=emb_dim, size=tile_size // f, attn_resolutions=config.attn_resolutions,
            heads=config.num_heads, groups=config.groups, dropout=config.dropout,
        )
        self.head = nn.Sequential(nn.GroupNorm(config.groups, self.body.out_channels), nn.SiLU(),
                                  nn.Conv2d(self.body.out_channels, out_ch, 3, padding=1))
        if config.input_skip:
            self.skip = nn.Conv2d(in_ch, out_ch, 1)
            self.skip_gate = nn.Linear(emb_dim, out_ch)
        if config.full_res_channels:
            self.full_res = FullResolutionPath(
                in_channels=in_ch // (f * f), out_channels=out_ch // (f * f), channels=config.full_res_channels,
                factor=f, body_in=ch, body_out=self.body.out_channels, emb_dim=emb_dim, groups=config.groups,
            )

    def encode_points(self, points: torch.Tensor) -> torch.Tensor:
        """(B, H, W) int64 point map (see :func:`point_map_channels`) -> (B, channels, H/f, W/f)
        features; computed once per sample."""
        x = point_map_channels(points, self.n_classes, unknown=self.config.unknown_class)
        return self.points(F.pixel_unshuffle(x, self.unshuffle))

    def text_condition(self, text: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, D) text embeddings with rows where ``keep`` is False replaced by the null text."""
        return torch.where(keep.view(-1, 1), text, self.null_text.to(text.dtype).expand_as(text))

    def forward(
        self, x_t: JointState, t: torch.Tensor, text: torch.Tensor, point_features: torch.Tensor, *, repeats: int = 1
    ) -> JointPrediction:
        """Predict (eps_image, eps_distance, log x0_label) at steps ``t``.

        ``text`` is (B, D) (already null where dropped); ``point_features`` come from
        :meth:`encode_points` and are reused across steps. With ``repeats`` = k, ``t``, ``text`` and
        ``point_features`` hold k blocks of B rows for the B rows of ``x_t`` (classifier-free
        guidance's conditional and unconditional halves) and the prediction has k * B rows: the
        layers that see only x_t (one-hot, stem, input skip, full-resolution features) run once.
        """
        label = F.one_hot(x_t.label.long(), self.num_labels).permute(0, 3, 1, 2).to(x_t.image.dtype) * 2 - 1
        latent = self.config.image_latent is not None
        x = torch.cat([x_t.distance, label] if latent else [x_t.image, x_t.distance, label], dim=1)
        xu = F.pixel_unshuffle(x, self.unshuffle)
        if latent:
            xu = torch.cat([x_t.image.to(xu.dtype), xu], dim=1)
        h = self.stem(xu)
        skip = self.skip(xu) if self.config.input_skip else None
        full = None
        if self.config.full_res_channels:
            full = self.full_res.features(x)
            h = h + self.full_res.body_input(full)
        if repeats > 1:
            h, skip, full = (None if v is None else v.repeat(repeats, 1, 1, 1) for v in (h, skip, full))
        h = h + point_features.to(x.dtype)
        emb = self.time_mlp(timestep_embedding(t, self.config.channels)) + self.text_proj(text)
        body = self.body(h, emb)
        y = self.head(body)
        if skip is not None:
            y = y + skip * self.skip_gate(emb)[:, :, None, None]
        if latent:
            image = y[:, :self.image_channels].float()
            rest = F.pixel_shuffle(y[:, self.image_channels:], self.unshuffle).float()
        else:
            out = F.pixel_shuffle(y, self.unshuffle)
            if full is not None:
                out = out + self.full_res.output(body, full, emb)
            out = out.float()
            image, rest = out[:, :3], out[:, 3:]
        return JointPrediction(
            eps_image=image,
            eps_distance=rest[:, :1],
            log_x0_label=torch.log_softmax(rest[:, 1:], dim=1),
        )
