"""The one bounded map behind every per-key or per-client memo."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from flask_basic_gate.bounded import BoundedMap
from flask_basic_gate.throttle import MAX_BLOCKED, FailureThrottle

THREADS = 8


@pytest.fixture(autouse=True)
def switch_often() -> Iterator[None]:
    """Threads switch every microsecond, so races show within a few seconds."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def hammer(work: Callable[[int, int], Any], rounds: int) -> list[BaseException]:
    """Run ``work(thread, n)`` for n in range(rounds) on 8 threads started
    together; return what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def run(thread: int) -> None:
        start.wait()
        try:
            for n in range(rounds):
                work(thread, n)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_bound_drops_expired_first_then_oldest() -> None:
    now = [100.0]
    memo: BoundedMap[str, float] = BoundedMap(3, expires=float, clock=lambda: now[0])
    memo.put("a", 150.0)
    memo.put("b", 90.0)  # already expired
    memo.put("c", 150.0)
    memo.put("d", 150.0)  # full: the expired "b" goes
    assert sorted(memo._data) == ["a", "c", "d"]
    memo.put("e", 150.0)  # full, nothing expired: the oldest goes
    assert sorted(memo._data) == ["c", "d", "e"]
    memo.put("c", 160.0)  # a known key makes no room
    assert len(memo) == 3 and memo.get("c") == 160.0


def test_a_map_full_of_live_entries_frees_a_sixteenth_at_once() -> None:
    # A flood of distinct clients keeps a map full of live entries: room is
    # made for the next sixteenth of new ones at once, the oldest first, so
    # the map is not scanned again for every new entry.
    memo: BoundedMap[int, float] = BoundedMap(64, expires=float, clock=lambda: 100.0)
    for n in range(64):
        memo.put(n, 200.0)
    memo.put(64, 200.0)
    assert len(memo) == 64 - 4 + 1
    assert [n for n in range(8) if n in memo] == [4, 5, 6, 7]
    for n in range(65, 68):
        memo.put(n, 200.0)  # room made already: nothing goes
    assert len(memo) == 64 and 4 in memo
    memo.put(68, 200.0)
    assert len(memo) == 61 and 4 not in memo and 8 in memo


def test_discard_if_keeps_a_newer_value() -> None:
    memo: BoundedMap[str, float] = BoundedMap(4, expires=float)
    memo.put("a", 1.0)
    memo.put("a", 2.0)
    memo.discard_if("a", 1.0)
    assert memo.get("a") == 2.0
    memo.discard_if("a", memo.get("a") or 0.0)
    assert "a" not in memo and not memo


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BoundedMap(0)


def test_eight_threads_while_it_sweeps() -> None:
    # Entries half expired, a small bound: nearly every put sweeps, while
    # other threads read, pop and put the same keys.
    memo: BoundedMap[int, float] = BoundedMap(200, expires=float)

    def work(thread: int, n: int) -> None:
        key = (thread * 7919 + n) % 500
        until = time.time() + (-1 if n % 2 else 60)
        memo.put(key, until)
        memo.get(key)
        if n % 3 == 0:
            memo.pop((key + 1) % 500)
        if n % 5 == 0:
            value = memo.get((key + 2) % 500)
            if value is not None:
                memo.discard_if((key + 2) % 500, value)
        if n % 997 == 0:
            memo.sweep()

    assert hammer(work, 4000) == []
    assert len(memo) <= 200


def test_throttle_memo_from_eight_threads_while_it_sweeps() -> None:
    # Pairs blocked here and (as the revocation listener does) from other
    # processes, while requests read and expire them: full, so every block
    # sweeps. Before the memo was a BoundedMap, readers popped pairs
    # without the lock the sweep held while deleting them.
    from flask_basic_gate.backends import local_counters

    throttle = FailureThrottle("1000/minute", local_counters())
    past, future = time.time() - 1, time.time() + 60
    for n in range(MAX_BLOCKED):
        throttle.block("10.0.0.1", f"k{n}", past if n % 2 else future)

    def work(thread: int, n: int) -> None:
        key = f"k{(thread * 7919 + n) % (MAX_BLOCKED * 2)}"
        throttle.block(f"10.0.{thread}.1", key, past if n % 10 == 0 else future)
        throttle.block("10.0.0.1", key, past)
        throttle.retry_after("10.0.0.1", key, time.time())

    assert hammer(work, 6000) == []
    assert len(throttle.blocked) <= MAX_BLOCKED
