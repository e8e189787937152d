"""Ordered, bounded in-flight work with a job-local stop: the one loop behind detection and generation.

`JobCancel` is the job's own stop flag. It also follows the caller's `cancel` event (a user or a
service cancelling the job) but never sets it: an internal failure stops this job only.
`InFlight.map` keeps at most `limit` calls running in worker threads and yields results in
submission order; on any error or interrupt it sets the job's stop flag first, so running calls
(gRPC requests and their retries) give up within a fraction of a second, and only then joins.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

POLL_SECONDS = 0.1


class JobCancel:
    """Set by this job on failure, or by the caller's event; `wait` returns early once either is set."""

    def __init__(self, caller: threading.Event | None = None):
        self._local = threading.Event()
        self._caller = caller

    def set(self) -> None:
        self._local.set()

    def is_set(self) -> bool:
        return self._local.is_set() or (self._caller is not None and self._caller.is_set())

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True as soon as the job is cancelled."""
        deadline = time.monotonic() + timeout
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._local.wait(min(POLL_SECONDS, left))
        return True


class InFlight:
    """`with InFlight(limit, cancel, "wav2lip") as flight: for ctx, result in flight.map(fn, items): ...`"""

    def __init__(self, limit: int, cancel: JobCancel, name: str):
        self.limit = max(1, limit)
        self.cancel = cancel
        self._executor = ThreadPoolExecutor(max_workers=self.limit, thread_name_prefix=name)
        self._pending: deque[tuple[Future, Any]] = deque()
        self.wait_seconds = 0.0  # time the consumer spent waiting for results (the stage's own cost)

    def map(self, fn: Callable, items: Iterable[tuple[tuple, Any]]) -> Iterator[tuple[Any, Any]]:
        """For each (args, context) of `items` run fn(*args); yield (context, result) in order.

        `items` is consumed lazily, so its producer (a decoder) runs only while fewer than `limit`
        calls are pending: at most `limit` results and one batch being built exist at once. A result
        that is ready is handed out before the next item is built, so the consumer starts early."""
        for args, context in items:
            self._pending.append((self._executor.submit(fn, *args), context))
            while self._pending and (len(self._pending) >= self.limit or self._pending[0][0].done()):
                yield self._pop()
        while self._pending:
            yield self._pop()

    def _pop(self) -> tuple[Any, Any]:
        future, context = self._pending.popleft()
        start = time.perf_counter()
        result = future.result()
        self.wait_seconds += time.perf_counter() - start
        return context, result

    def __enter__(self) -> "InFlight":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.cancel.set()  # running calls notice within POLL_SECONDS
            for future, _ in self._pending:
                future.cancel()
            self._pending.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)
