"""The prefetching thread: the same items in the same order, errors where they happened, a clean stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from spray.data.prefetch import prefetched


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_items_come_in_order(depth: int) -> None:
    assert list(prefetched(range(50), depth)) == list(range(50))


def test_reading_runs_in_another_thread_ahead_of_the_consumer() -> None:
    seen: list[str] = []

    def items() -> Iterator[int]:
        for i in range(3):
            seen.append(threading.current_thread().name)
            yield i

    it = prefetched(items(), 1)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:  # item 1 is read while item 0 is being used
        time.sleep(0.01)
    assert seen[:2] == ["spray-prefetch", "spray-prefetch"]
    assert list(it) == [1, 2]


def test_an_error_while_reading_is_raised_at_its_item() -> None:
    def items() -> Iterator[int]:
        yield 0
        yield 1
        raise ValueError("sample 2 is corrupt")

    got = []
    with pytest.raises(ValueError, match="sample 2 is corrupt"):
        for x in prefetched(items(), 2):
            got.append(x)
    assert got == [0, 1]


def test_a_consumer_that_stops_early_stops_the_reader() -> None:
    read = []

    def items() -> Iterator[int]:
        for i in range(1000):
            read.append(i)
            yield i

    it = prefetched(items(), 2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # as a loop left by an exception or a signal does
    n = len(read)
    time.sleep(0.3)
    assert len(read) == n <= 3 + 2 + 1  # at most the queue's depth and one item in hand were read ahead
    assert not any(t.name == "spray-prefetch" for t in threading.enumerate())
