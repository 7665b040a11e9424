"""What one worker does with one batch: load the model once, sample, separate instances.

Runs in the calling process or inside a Dask worker process; the model is cached per process
(and per device), so a worker pays the load once however many batches it gets.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import numpy as np

from ..records import LabelledTile
from .jobs import Batch

_MODELS: dict[tuple[str, str, str], object] = {}


@dataclass(frozen=True)
class SamplingSpec:
    """Everything a worker needs besides the batch (small and picklable)."""

    model_path: str
    # Sampling settings; None: the model's own (its config's ``sample`` section).
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    eta: float | None = None
    device: str = "auto"
    threads: int | None = None
    model_digest: str = ""  # part of the model cache key: new weights at the same path are reloaded
    guidance_interval: tuple[float, float] | None = None


def gpu_index_for_worker(name: object, n_gpus: int) -> int:
    """Which of ``n_gpus`` GPUs a Dask worker called ``name`` uses.

    LocalCluster names its workers 0, 1, 2, ..., so worker k takes GPU k mod n and the GPUs fill
    evenly. Other names (strings on external clusters) go through CRC-32, which, unlike
    ``hash()``, is the same in every process, so a worker keeps its GPU across restarts.
    """
    if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
        return int(name) % n_gpus
    return zlib.crc32(str(name).encode()) % n_gpus


def resolve_device(device: str) -> str:
    """``auto`` -> this worker's GPU when there is one (workers spread over GPUs), else cpu."""
    import torch

    from ..errors import CosynthError

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise CosynthError(f"device {device!r} requested but torch sees no CUDA GPU here (use --device cpu or auto)")
        return device
    if not torch.cuda.is_available():
        return "cpu"
    try:
        from distributed import get_worker

        index = gpu_index_for_worker(get_worker().name, torch.cuda.device_count())
    except (ImportError, ValueError):
        index = 0
    return f"cuda:{index}"


def cached_model(path: str, device: str, digest: str = ""):
    """The model at ``path`` (weights fingerprint ``digest``) on ``device``, loaded once per process."""
    from ..training.checkpoint import load_model

    key = (os.path.abspath(path), device, digest)
    if key not in _MODELS:
        _MODELS[key] = load_model(path, device=device)
    return _MODELS[key]


def synthesize_batch(spec: SamplingSpec, batch: Batch) -> list[LabelledTile]:
    """Co-synthesise the batch's tiles with the model at ``spec.model_path`` (cached per process)."""
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = resolve_device(spec.device)
    return sample_tiles(cached_model(spec.model_path, device, spec.model_digest), batch, spec, device)


def sample_tiles(model, batch: Batch, spec: SamplingSpec, device: str) -> list[LabelledTile]:
    """Sample one batch with ``model`` and separate instances with the point-guided watershed."""
    import torch

    from ..instances import separate_instances

    layouts = [job.layout for job in batch.jobs]
    generator = torch.Generator(device="cpu").manual_seed(batch.seed)
    samples = model.sample(layouts, steps=spec.steps, guidance=spec.guidance, sampler=spec.sampler,
                           eta=spec.eta, generator=generator, device=device, guidance_interval=spec.guidance_interval)
    tiles = []
    for layout, sample in zip(layouts, samples):
        # Markers are the layout points: foreground blobs no point reaches are not nuclei of the layout.
        instances, classes = separate_instances(sample.distance, sample.semantic, layout.xy_tile, layout.classes,
                                                unmarked="drop")
        tiles.append(LabelledTile(
            image=sample.image, instances=instances, classes=classes, taxonomy=layout.taxonomy,
            provenance=layout.provenance, distance=sample.distance, placement=layout.placement,
            extra={"prompt": sample.prompt, "semantic": sample.semantic.astype(np.int16)},
        ))
    return tiles
