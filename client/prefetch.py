"""Run a producer (a decoder) ahead of its consumer in a thread, a bounded number of items ahead.

The face detector's decode would otherwise only run while the detection thread is not waiting
for the server, so decode and inference latencies would add up instead of overlapping.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yield `items` in order while a thread produces up to `depth` of them ahead. The producer's
    error is raised here; closing this generator stops the producer and closes `items` (so a
    decoder's ffmpeg exits) before returning."""
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put((item, None)):
                    break
            else:
                put((_DONE, None))
        except BaseException as exc:  # handed to the consumer
            put((_DONE, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()
