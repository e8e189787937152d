"""Seconds spent per pipeline stage, summed over threads (stages overlap, so the sum can exceed wall time)."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

STAGES = ("decode", "mel", "detect", "generate", "paste", "encode")


class StageTimer:
    def __init__(self):
        self.seconds = {s: 0.0 for s in STAGES}
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def timed_iter(self, name: str, iterable):
        """Count the time spent producing each item of `iterable` (e.g. decoding frames) as `name`."""
        it = iter(iterable)
        while True:
            with self.stage(name):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}
