"""Run batches in-process or on Dask, handing each finished batch to a callback in batch order
of completion. In-process is the default; ``workers=N`` starts a local cluster of N worker
processes; ``scheduler=ADDRESS`` uses an existing cluster. Each worker process loads the model
once (see worker.py), and torch in each worker gets ``threads`` threads so N workers share the
machine's cores instead of oversubscribing them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..errors import CosynthError
from ..records import LabelledTile
from .jobs import Batch
from .worker import SamplingSpec, synthesize_batch

OnResult = Callable[[Batch, list[LabelledTile]], None]


def run_batches(
    batches: Sequence[Batch],
    spec: SamplingSpec,
    on_result: OnResult,
    *,
    workers: int = 0,
    scheduler: str | None = None,
) -> None:
    """Synthesise ``batches`` and call ``on_result(batch, tiles)`` for each as it finishes."""
    if not batches:
        return
    if scheduler is None and workers <= 0:
        for batch in batches:
            on_result(batch, synthesize_batch(spec, batch))
        return
    _run_on_dask(batches, spec, on_result, workers=workers, scheduler=scheduler)


def _run_on_dask(batches: Sequence[Batch], spec: SamplingSpec, on_result: OnResult, *, workers: int,
                 scheduler: str | None) -> None:
    from distributed import Client, LocalCluster, as_completed
    from distributed.scheduler import KilledWorker

    cluster = None
    try:
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise CosynthError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        else:
            threads = spec.threads or max(1, (os.cpu_count() or 1) // workers)
            spec = replace(spec, threads=threads)
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=40)
            client = Client(cluster)
        with client:
            by_key = {}
            futures = []
            run_id = uuid.uuid4().hex[:12]  # keys unique per run, also on a long-lived shared cluster
            for batch in batches:
                future = client.submit(synthesize_batch, spec, batch, pure=False, key=f"cosynth-batch-{run_id}-{batch.index}")
                by_key[future.key] = batch
                futures.append(future)
            for future in as_completed(futures):
                try:
                    tiles = future.result()
                except KilledWorker as exc:
                    # Dask reran the batch on other workers until its retry budget ran out.
                    raise CosynthError(
                        f"batch {by_key[future.key].index}: every Dask worker that ran it died (KilledWorker: "
                        f"{' '.join(str(exc).split())[:120]}; out of memory?); finished batches are kept, rerun "
                        "the same command to resume"
                    ) from None
                on_result(by_key[future.key], tiles)
    finally:
        if cluster is not None:
            cluster.close()
