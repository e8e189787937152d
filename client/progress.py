"""A terminal progress bar (frames, frames/s, ETA) that stays silent when stderr is not a TTY."""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

ProgressCallback = Callable[[int, int], None]  # (frames done, frames total)


class ProgressBar:
    def __init__(self, total: int, label: str = "lip-sync", stream: TextIO | None = None, enabled: bool | None = None):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started: float | None = None  # set on the first update: earlier stages do not count
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        self.total = max(total, 1)
        now = time.monotonic()
        if self.started is None:
            self.started = now
        if not self.enabled or (now - self._last < 0.1 and done < self.total):
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else 0.0
        filled = int(30 * done / self.total)
        bar = "#" * filled + "." * (30 - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} frames {rate:5.1f} fps ETA {int(eta) // 60:02d}:{int(eta) % 60:02d}")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
