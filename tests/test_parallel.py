"""ordered_map: the readers' thread pool keeps input order, bounds the work in flight and raises
an item's error at that item."""

from __future__ import annotations

import threading
import time

import pytest

from wsi_cosynth.errors import CosynthError
from wsi_cosynth.parallel import ordered_map


def _slow_square(x: int) -> int:
    time.sleep(0.002 * ((x * 7) % 5))  # later items often finish first
    return x * x


@pytest.mark.parametrize("workers", [1, 3])
def test_results_come_in_input_order(workers):
    assert list(ordered_map(_slow_square, range(40), workers=workers)) == [(x, x * x) for x in range(40)]


def test_reads_run_on_several_threads_and_at_most_ahead_are_in_flight():
    running, peak, threads = [0], [0], set()
    lock = threading.Lock()

    def work(x):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            threads.add(threading.get_ident())
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return x

    consumed = 0
    for _ in ordered_map(work, range(30), workers=3, ahead=4):
        consumed += 1
    assert consumed == 30 and len(threads) > 1 and peak[0] <= 3


def test_an_error_surfaces_at_its_own_item_after_the_earlier_ones():
    def work(x):
        if x == 5:
            raise CosynthError("item 5 is damaged")
        return x

    seen = []
    with pytest.raises(CosynthError, match="item 5"):
        for x, _ in ordered_map(work, range(20), workers=2):
            seen.append(x)
    assert seen == [0, 1, 2, 3, 4]


def test_closing_early_stops_submitting():
    started = []

    def work(x):
        started.append(x)
        return x

    gen = ordered_map(work, range(1000), workers=2, ahead=4)
    assert next(gen) == (0, 0)
    gen.close()
    assert len(started) <= 6


def test_workers_must_be_positive():
    with pytest.raises(CosynthError, match="positive"):
        list(ordered_map(_slow_square, range(3), workers=0))
