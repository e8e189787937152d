"""The detector decode's read-ahead thread (client/prefetch.py)."""
from __future__ import annotations

import threading

import pytest

from lipsync_triton.client.prefetch import prefetch


def test_items_arrive_in_order_and_the_producer_stays_within_depth():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    seen = []
    for item in prefetch(source(), depth=3):
        # depth in the queue, one being put, one handed out: never more than depth + 2 ahead
        assert len(produced) - len(seen) <= 3 + 2
        seen.append(item)
    assert seen == list(range(50))


def test_the_producers_error_reaches_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("decoder failed")

    seen = []
    with pytest.raises(ValueError, match="decoder failed"):
        for item in prefetch(source(), depth=4):
            seen.append(item)
    assert seen == [1, 2]


def test_stopping_early_closes_the_source_and_ends_the_thread():
    closed = threading.Event()

    def source():
        try:
            i = 0
            while True:  # an endless decoder
                yield i
                i += 1
        finally:
            closed.set()  # where a decoder's ffmpeg is stopped

    items = prefetch(source(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    assert any(t.name == "prefetch" for t in threading.enumerate())
    items.close()
    # Counted by name: other tests' helper threads (timers, pools) may end meanwhile.
    assert closed.is_set() and not any(t.name == "prefetch" for t in threading.enumerate())
