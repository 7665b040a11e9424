"""Ordered, bounded parallel map over threads: the readers' way to use more than one core.

Decoding (libjpeg, zlib, OpenSlide) and numpy's array passes release the GIL, so a few threads
reading the next items overlap with the consumer writing the current one. Results come out in
input order whatever the thread timing, at most ``ahead`` items are in flight (memory stays a
few items), and an item's exception is raised when its turn comes, so a failure surfaces at the
same item, with the same error, as a serial loop would give.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import CosynthError

T = TypeVar("T")
R = TypeVar("R")


def read_workers() -> int:
    """Threads for reading: the CPU cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, ahead: int | None = None,
                name: str = "read") -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item))`` in the order of ``items``, computed by ``workers`` threads.

    ``ahead``: items submitted before the consumer takes the oldest (default 2 x workers).
    ``workers`` 1 runs ``fn`` in the calling thread. Closing the generator early cancels what
    has not started and waits for what has.
    """
    if workers < 1:
        raise CosynthError(f"workers must be a positive number of threads, got {workers!r}")
    if workers == 1:
        for item in items:
            yield item, fn(item)
        return
    limit = max(1, ahead if ahead is not None else 2 * workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    try:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= limit:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
