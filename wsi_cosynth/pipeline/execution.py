"""Run tasks in-process or on Dask, handing each result to a callback in the calling thread.

A :class:`Task` is a picklable function call (a batch to synthesise, a slide to plan, a range of
real tiles to read). :class:`TaskRunner` runs tasks in this process (the default; ``concurrency``
of them at once on threads, results in task order), on a local cluster of ``workers`` processes
(``workers=N``), or on an existing cluster (``scheduler=ADDRESS``), where results come in order
of completion. On Dask at most a bounded number of tasks are submitted ahead of the results, so
neither the client nor the scheduler holds a whole cohort's tasks at once. Each worker process
loads the model once (see worker.py); synthesis tasks pin their own torch thread count, so
results do not depend on where they ran.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ..errors import CosynthError
from ..parallel import ordered_map, read_workers
from ..records import LabelledTile
from .jobs import Batch
from .worker import DEFAULT_SAMPLING_THREADS, SamplingSpec, resolve_device, synthesize_batch

OnResult = Callable[[Batch, list[LabelledTile]], None]
# A task's result handler; it may return follow-up tasks (e.g. the rest of a slide once its first
# task has told how many tiles it has), which run before the tasks not started yet.
TaskHandler = Callable[["Task", Any], Iterable["Task"] | None]
# Tasks submitted to Dask ahead of the results: this many per worker thread (and at least
# MIN_WINDOW), so workers never wait for the client while memory stays bounded.
TASKS_AHEAD_PER_THREAD = 2
MIN_WINDOW = 8


@dataclass(frozen=True)
class Task:
    """One unit of work, ``fn(*args)``; ``name`` is unique within a run (no spaces)."""

    name: str
    fn: Callable[..., Any]
    args: tuple


class TaskRunner:
    """Where tasks run: in this process, on ``workers`` local Dask processes, or at ``scheduler``.

    Use as a context manager: a local cluster is started on enter and closed on exit, so two
    :meth:`run` calls (a cohort's planning, then its tiles) share the cluster and its workers'
    loaded models.
    """

    def __init__(self, *, workers: int = 0, scheduler: str | None = None) -> None:
        if workers < 0:
            raise CosynthError(f"--workers must be >= 0, got {workers}")
        self.workers = int(workers)
        self.scheduler = scheduler
        self._client = None
        self._cluster = None
        self._run_id = uuid.uuid4().hex[:12]  # task keys unique per run, also on a long-lived shared cluster

    @property
    def distributed(self) -> bool:
        return self.scheduler is not None or self.workers > 0

    def __enter__(self) -> "TaskRunner":
        if not self.distributed:
            return self
        from distributed import Client, LocalCluster

        if self.scheduler is not None:
            try:
                self._client = Client(self.scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise CosynthError(f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from None
        else:
            self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None, silence_logs=40)
            self._client = Client(self._cluster)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    def run(self, tasks: Iterable[Task], on_result: TaskHandler, *, concurrency: int = 1) -> None:
        """Run ``tasks`` (consumed lazily) and call ``on_result(task, result)`` for each; the
        follow-up tasks it returns run before the remaining ``tasks``.

        In-process, ``concurrency`` tasks run at once on threads and results come in task order
        (follow-ups need ``concurrency`` 1); a task's exception is raised at its turn. On Dask
        results come as tasks finish.
        """
        if self.distributed:
            if self._client is None:
                raise RuntimeError("TaskRunner.run outside its with-block")
            self._run_on_dask(iter(tasks), on_result)
        elif concurrency > 1:
            for task, result in ordered_map(_call, tasks, workers=int(concurrency), name="task"):
                if on_result(task, result):
                    raise RuntimeError("follow-up tasks need concurrency 1 in-process")
        else:
            follow: deque[Task] = deque()
            queue = iter(tasks)
            while (task := follow.popleft() if follow else next(queue, None)) is not None:
                follow.extendleft(reversed(list(on_result(task, _call(task)) or ())))

    def _run_on_dask(self, tasks: Iterator[Task], on_result: TaskHandler) -> None:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        client = self._client
        pending: dict[str, Task] = {}
        follow: deque[Task] = deque()
        done = as_completed()

        def top_up(window: int) -> None:
            while len(pending) < window:
                task = follow.popleft() if follow else next(tasks, None)
                if task is None:
                    return
                future = client.submit(task.fn, *task.args, pure=False, key=f"cosynth-{self._run_id}-{task.name}")
                pending[future.key] = task
                done.add(future)

        window = self._window()
        top_up(window)
        for n, future in enumerate(done, start=1):
            task = pending.pop(future.key)
            try:
                result = future.result()
            except KilledWorker as exc:
                # Dask reran the task on other workers until its retry budget ran out.
                raise CosynthError(
                    f"task {task.name}: every Dask worker that ran it died (KilledWorker: "
                    f"{' '.join(str(exc).split())[:120]}; out of memory?); finished tasks are kept, rerun "
                    "the same command to resume"
                ) from None
            future.release()
            follow.extend(on_result(task, result) or ())
            if n % 16 == 0:  # workers may have joined (an autoscaling cluster)
                window = self._window()
            top_up(window)

    def _window(self) -> int:
        threads = sum(self._client.nthreads().values()) if self._client is not None else 0
        return max(MIN_WINDOW, TASKS_AHEAD_PER_THREAD * threads)


def _call(task: Task) -> Any:
    return task.fn(*task.args)


def sampling_concurrency(spec: SamplingSpec) -> int:
    """Synthesis tasks run at once in-process: one per ``spec.threads`` cores on CPU (at most
    :func:`~wsi_cosynth.parallel.read_workers` cores), one on a GPU."""
    if not resolve_device(spec.device).startswith("cpu"):
        return 1
    return max(1, read_workers() // (spec.threads or DEFAULT_SAMPLING_THREADS))


def batch_tasks(batches: Sequence[Batch], spec: SamplingSpec, prefix: str = "batch") -> Iterator[Task]:
    """One synthesis task per batch, named ``<prefix>-<batch index>``."""
    for batch in batches:
        yield Task(f"{prefix}-{batch.index}", synthesize_batch, (spec, batch))


def run_batches(
    batches: Sequence[Batch],
    spec: SamplingSpec,
    on_result: OnResult,
    *,
    workers: int = 0,
    scheduler: str | None = None,
) -> None:
    """Synthesise ``batches`` and call ``on_result(batch, tiles)`` for each as it finishes
    (in batch order in-process)."""
    if not batches:
        return
    with TaskRunner(workers=workers, scheduler=scheduler) as runner:
        concurrency = 1 if runner.distributed else sampling_concurrency(spec)
        runner.run(batch_tasks(batches, spec), lambda task, tiles: on_result(task.args[1], tiles),
                   concurrency=concurrency)
