"""What one worker does with one batch: load the model once, sample, separate instances.

Runs in the calling process or inside a Dask worker process; the model is cached per process
(and per device), so a worker pays the load once however many batches it gets.

Every batch is sampled with the same number of torch intra-op threads, ``SamplingSpec.threads``
(default :data:`DEFAULT_SAMPLING_THREADS`), set for the calling thread around the sampling. On
CPU the result depends on it: oneDNN splits the channel sums of a convolution (here the 1 x 1
ones) over the threads it is given, so another thread count adds in another order and, after
the sampler's steps and the rounding to uint8, a few pixels move by one grey level. A Dask
worker started with ``dask worker --nthreads 1`` runs torch on one thread (the nanny sets
OMP_NUM_THREADS=1) while an in-process run used all cores, so their files differed; pinned, the
same command gives the same files in-process, on a local cluster or on any external one (same
CPU kind and torch build; GPU runs do not depend on it).

A Dask nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (to give freed memory back
to the OS). Setting it also stops glibc from raising its mmap threshold, so every activation
tensor above 128 KiB is mapped and zero-filled afresh: sampling took 1.9x the CPU time in such a
worker (benchmarks/worker_allocator.py). A synthesis task therefore sets the thresholds once
per process to keep tensors up to 32 MiB in the heap (:func:`keep_tensors_in_heap`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..records import LabelledTile
from .jobs import Batch

_MODELS: dict[tuple[str, str, str], object] = {}
# Torch intra-op threads per synthesis task unless --threads says otherwise: one, so that a
# task gives the same numbers wherever it runs; in-process runs use the other cores by running
# several tasks at once (execution.py), a cluster by running one task per worker thread.
DEFAULT_SAMPLING_THREADS = 1
# glibc mallopt parameters (malloc.h) and the values a synthesis worker sets (see the docstring).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES, _TRIM_THRESHOLD_BYTES = 32 << 20, 128 << 20
_HEAP_TUNED: list[bool] = []


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
    spacing: str | None = None
    final_label: str | None = None


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
    keep_tensors_in_heap()
    device = resolve_device(spec.device)
    model = cached_model(spec.model_path, device, spec.model_digest)
    with intra_op_threads(spec.threads or DEFAULT_SAMPLING_THREADS):
        return sample_tiles(model, batch, spec, device)


def keep_tensors_in_heap() -> None:
    """Undo the effect of ``MALLOC_TRIM_THRESHOLD_`` (set by Dask's nanny) on large allocations,
    once per process: mmap threshold 32 MiB, trim threshold 128 MiB. Only where that variable is
    set, and only with glibc (elsewhere there is no ``mallopt`` and nothing to undo)."""
    if _HEAP_TUNED or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _HEAP_TUNED.append(True)
    try:
        libc = _libc()
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_free_heap() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing).

    A long job made of many equal pieces (a region's chunks) frees each piece's tensors, but glibc
    keeps the freed heap and fragments it a little more with every piece, so the process's peak
    grew with the number of pieces (+32% for 4x the chunks) although no piece holds more than the
    first. Trimming between pieces keeps the peak at one piece's; it costs milliseconds and leaves
    the mmap threshold (the sampling speed, :func:`keep_tensors_in_heap`) alone.
    """
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def large_blocks_returned() -> Iterator[None]:
    """Within the body, allocations over 1 MiB are mapped from the system and given back when
    freed (glibc ``M_MMAP_THRESHOLD``); afterwards the threshold is 32 MiB, as in a synthesis
    worker (:func:`keep_tensors_in_heap`).

    For passes that allocate a few large blocks per piece (a region's decode: ~32 MiB decoder
    activations per 512-px block): with glibc's sliding threshold such blocks land in the heap
    once one has been freed, and the peak then varied by +-25 MiB from run to run and grew with
    the number of pieces. Mapping them costs a page fault per page, negligible beside a decode,
    not beside the sampler's many small steps, which is why this is not done process-wide.
    """
    try:
        libc = _libc()
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch intra-op threads in the calling thread, then restore.

    With torch's OpenMP backend the count is per calling thread, so concurrent tasks on several
    Python threads (in-process) or Dask worker threads each get exactly ``n``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample_tiles(model, batch: Batch, spec: SamplingSpec, device: str) -> list[LabelledTile]:
    """Sample one batch with ``model`` and separate instances with the point-guided watershed."""
    import torch

    from ..colour import match_colour
    from ..instances import separate_instances

    layouts = [job.layout for job in batch.jobs]
    generator = torch.Generator(device="cpu").manual_seed(batch.seed)
    samples = model.sample(layouts, steps=spec.steps, guidance=spec.guidance, sampler=spec.sampler,
                           eta=spec.eta, generator=generator, device=device, guidance_interval=spec.guidance_interval,
                           spacing=spec.spacing, final_label=spec.final_label)
    tiles = []
    for job, layout, sample in zip(batch.jobs, layouts, samples):
        # Markers are the layout points: foreground blobs no point reaches are not nuclei of the layout.
        instances, classes = separate_instances(sample.distance, sample.semantic, layout.xy_tile, layout.classes,
                                                unmarked="drop")
        # The slide's own look: the image takes the colour of the real tile it stands for.
        image = sample.image if job.colour is None else match_colour(sample.image, job.colour)
        tiles.append(LabelledTile(
            image=image, instances=instances, classes=classes, taxonomy=layout.taxonomy,
            provenance=layout.provenance, distance=sample.distance, placement=layout.placement,
            extra={"prompt": sample.prompt, "semantic": sample.semantic.astype(np.int16)},
        ))
    return tiles
