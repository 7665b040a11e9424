"""Stage one of a latent model: train its image autoencoder on the training tiles' images.

Loss: L1 on pixels plus L1 on horizontal and vertical pixel differences (keeps nuclear edges
from washing out, at no cost), plus a small L2 pull on the latents so their scale stays put.
The decoder is trained on latents with a little Gaussian noise added, so the diffusion's
imperfect latents decode to tissue rather than artefacts. No adversarial or perceptual term:
at the KID scale the project measures, blur of 1-2 px costs at most 0.03 (benchmarks/README.md,
"What the KID is made of"), and either term would multiply the cost per step on a CPU.

Resumable: ``OUT/autoencoder.pt`` holds weights, optimiser, step and RNG state, written
atomically every ``checkpoint_every`` steps and at the end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import write_text_atomic
from ..models.autoencoder import ImageAutoencoder
from .dataset import TileDataset

STATE = "autoencoder.pt"
LATENT_NOISE = 0.1  # std of the noise on the decoder's input, relative to the latents' std
LATENT_L2 = 1e-4


def reconstruction_loss(recon: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """L1 on pixels + L1 on the images' first differences along both axes."""
    def diffs(x):
        return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]

    (ry, rx), (iy, ix) = diffs(recon), diffs(image)
    return F.l1_loss(recon, image) + F.l1_loss(ry, iy) + F.l1_loss(rx, ix)


def autoencoder_losses(ae: ImageAutoencoder, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    z = ae.encode_raw(image)
    noise = torch.randn(z.shape, generator=generator, device=z.device) * (LATENT_NOISE * z.detach().std())
    recon = ae.decode_raw(z + noise)
    rec = reconstruction_loss(recon, image)
    reg = z.pow(2).mean()
    return {"loss": rec + LATENT_L2 * reg, "reconstruction": rec, "latent_l2": reg}


@torch.no_grad()
def calibrate_latent_scale(ae: ImageAutoencoder, dataset: TileDataset, *, batches: int = 8, batch_size: int = 16,
                           seed: int = 1) -> float:
    """Set ``ae.latent_scale`` to 1 / std of the raw latents over random training crops."""
    rng = np.random.default_rng(seed)
    zs = [ae.encode_raw(dataset.batch(batch_size, rng).x0.image).flatten() for _ in range(batches)]
    std = float(torch.cat(zs).std())
    ae.latent_scale.fill_(1.0 / std)
    return 1.0 / std


def train_autoencoder(
    ae: ImageAutoencoder,
    dataset: TileDataset,
    out_dir: Path,
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    cpu_seconds: float | None = None,
    checkpoint_every: int = 200,
    log_every: int = 20,
    seed: int = 0,
) -> dict:
    """Train ``ae`` in place up to ``steps`` (resuming from ``out_dir`` if it holds a state),
    stopping early after ``cpu_seconds`` of this process's CPU time; calibrates the latent scale
    at the end. Returns {"step", "reconstruction" (last logged), "latent_scale"}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(ae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    state_path = out_dir / STATE
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        ae.load_state_dict(state["weights"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["torch_rng"])

    def lr_at(s: int) -> float:  # linear warm-up over 100 steps, then cosine to 10%
        warm = min(1.0, (s + 1) / 100)
        return lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))

    def save() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"weights": ae.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "numpy_rng": rng.bit_generator.state, "torch_rng": gen.get_state()}, tmp)
        tmp.replace(state_path)

    cpu_begin = time.process_time()
    last = {}
    log = (out_dir / "autoencoder-loss.jsonl").open("a")
    ae.train()
    while step < steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        image = dataset.batch(batch_size, rng).x0.image
        losses = autoencoder_losses(ae, image, gen)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % log_every == 0:
            last = {k: round(float(v), 5) for k, v in losses.items()}
            log.write(json.dumps({"step": step, **last, "cpu_s": round(time.process_time() - cpu_begin, 1)}) + "\n")
            log.flush()
        if step % checkpoint_every == 0:
            save()
        if cpu_seconds is not None and time.process_time() - cpu_begin >= cpu_seconds:
            break
    log.close()
    ae.eval()
    scale = calibrate_latent_scale(ae, dataset)
    save()
    write_text_atomic(out_dir / "autoencoder.json", json.dumps({"step": step, "latent_scale": scale,
                                                              "config": ae.config.model_dump(mode="json")}))
    return {"step": step, "reconstruction": last.get("reconstruction"), "latent_scale": scale}
