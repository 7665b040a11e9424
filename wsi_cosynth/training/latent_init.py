"""Warm-start a latent model from a trained pixel-space model of the same denoiser sizes.

The two denoisers differ only where the image enters and leaves the U-Net: the pixel model's
stem and input skip read 3 x f^2 unshuffled pixel channels and its head and skip write them; the
latent model reads and writes ``latent_channels``. Everything else (body, point encoder, text,
the distance and label columns) carries over unchanged. For the image columns we fit, on training
tiles, the least-squares linear maps between a cell's latent z and its unshuffled pixels p
(p ~ z A + a, z ~ p B) and compose them with the pixel model's weights: the latent stem sees
what the pixel stem saw of p ~ z A, and the latent head predicts B-projections of what the pixel
head predicted. The maps are only linearisations of the autoencoder, so the warm-started model
is an approximation of the pixel one that fine-tuning then corrects, not the same function.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models.autoencoder import ImageAutoencoder
from .dataset import TileDataset


@torch.no_grad()
def linear_maps(ae: ImageAutoencoder, dataset: TileDataset, *, batches: int = 8, batch_size: int = 16,
                seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, a, B): p ~ z A + a with A (C, P) and a (P,), and z ~ p B with B (P, C), over random
    training crops; C latent channels, P = 3 f^2 pixel channels of a cell."""
    rng = np.random.default_rng(seed)
    zs, ps = [], []
    for _ in range(batches):
        image = dataset.batch(batch_size, rng).x0.image
        z = ae.encode(image)
        p = F.pixel_unshuffle(image, ae.factor)
        zs.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
        ps.append(p.permute(0, 2, 3, 1).reshape(-1, p.shape[1]))
    z, p = torch.cat(zs).double(), torch.cat(ps).double()
    ones = torch.ones(len(z), 1, dtype=z.dtype)
    coef = torch.linalg.lstsq(torch.cat([z, ones], 1), p).solution  # (C + 1, P)
    back = torch.linalg.lstsq(p - p.mean(0), z - z.mean(0)).solution  # (P, C)
    return coef[:-1].float(), coef[-1].float(), back.float()


def adapt_pixel_state(pixel_state: dict[str, torch.Tensor], latent_state: dict[str, torch.Tensor],
                      maps: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *, pixel_channels: int) -> dict[str, torch.Tensor]:
    """The latent model's state (``latent_state`` gives names, shapes and the autoencoder) with
    every other weight taken from ``pixel_state``, the image columns and rows mapped by ``maps``."""
    A, a, B = maps
    P = pixel_channels
    out = {}
    for key, target in latent_state.items():
        if key.startswith("autoencoder."):
            out[key] = target
            continue
        w = pixel_state[key].to(target.dtype)
        if key in ("denoiser.stem.weight", "denoiser.skip.weight"):
            w_img, w_rest = w[:, :P], w[:, P:]
            if key == "denoiser.skip.weight":  # its output rows are image channels too
                w_img = _map_rows(w_img, B)
                w_rest = _map_rows(w_rest, B)
            w = torch.cat([torch.einsum("opyx,cp->ocyx", w_img, A), w_rest], 1)
        elif key == "denoiser.stem.bias":
            w = w + torch.einsum("opyx,p->o", pixel_state["denoiser.stem.weight"][:, :P].to(w.dtype), a)
        elif key == "denoiser.skip.bias":
            w_img = pixel_state["denoiser.skip.weight"][:, :P].to(w.dtype).sum((2, 3)) @ a
            w = _map_rows((w + w_img)[:, None, None, None], B)[:, 0, 0, 0]
        elif key.startswith("denoiser.head.2.") or key.startswith("denoiser.skip_gate."):
            w = _map_rows(w, B, mean=key.startswith("denoiser.skip_gate."))
        if tuple(w.shape) != tuple(target.shape):
            raise ValueError(f"{key}: mapped shape {tuple(w.shape)} != {tuple(target.shape)}")
        out[key] = w.contiguous()
    return out


def _map_rows(w: torch.Tensor, B: torch.Tensor, *, mean: bool = False) -> torch.Tensor:
    """Replace the first P rows (output channels) of ``w`` by C rows: their B-projection, or with
    ``mean`` (the skip's per-channel gates, which scale rather than sum) their average weighted
    by |B|, so that a latent channel is gated like the pixel channels it is made of."""
    P, C = B.shape
    img, rest = w[:P], w[P:]
    if mean:
        share = B.abs() / B.abs().sum(0, keepdim=True).clamp_min(1e-12)
        mapped = torch.einsum("p...,pc->c...", img, share)
    else:
        mapped = torch.einsum("p...,pc->c...", img, B)
    return torch.cat([mapped, rest], 0)
