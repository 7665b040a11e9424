"""Random draws on the generator's own device, moved to where the tensors live.

torch refuses a CPU generator for a CUDA draw. Drawing where the generator is, then moving the
result, lets a sampler seeded with a CPU generator run on any device, and makes one seed give
the same noise on CPU and GPU. On CPU nothing moves, so results are unchanged there.
"""

from __future__ import annotations

import torch


def _where(generator: torch.Generator | None, device: torch.device | str) -> torch.device | str:
    return generator.device if generator is not None else device


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """Standard normal float32 noise of ``shape`` on ``device``."""
    return torch.randn(shape, generator=generator, device=_where(generator, device)).to(device)


def rand(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """Uniform [0, 1) float32 draws of ``shape`` on ``device``."""
    return torch.rand(shape, generator=generator, device=_where(generator, device), dtype=torch.float32).to(device)


def randint(high: int, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None,
            device: torch.device | str) -> torch.Tensor:
    """Integers in [0, high) of ``shape`` on ``device``."""
    return torch.randint(0, high, shape, generator=generator, device=_where(generator, device)).to(device)
