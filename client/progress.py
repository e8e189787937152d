"""Progress on a terminal, drawn by tqdm (rate smoothing, ETA, terminal width, clean redraws), and
silent when stderr is not a terminal. `terminal_progress()` also routes this package's log lines
through tqdm while bars are shown, so a log line never lands in the middle of a bar."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from tqdm import tqdm

ProgressCallback = Callable[[int, int], None]  # (frames done, frames total)


class ProgressBar:
    """A ProgressCallback drawing one bar; `close()` ends it at the count reached (a stage may
    finish before its first estimate: face detection stops once the frames the speech uses are done)."""

    def __init__(self, label: str = "lip-sync", stream: TextIO | None = None, enabled: bool | None = None, unit: str = "frame"):
        self.label, self.unit = label, unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:  # created on the first update: earlier stages do not count in its rate
            self._bar = tqdm(total=total, desc=self.label, unit=self.unit, file=self.stream, dynamic_ncols=True,
                             mininterval=0.1, smoothing=0.1)
        if total != self._bar.total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            if self._bar.n < (self._bar.total or 0):
                self._bar.total = self._bar.n  # finished early by design: end full, not stuck at 65/230
            self._bar.close()
            self._bar = None


@contextmanager
def terminal_progress(*labels: str, enabled: bool = True) -> Iterator[list[ProgressBar | None]]:
    """Bars for these stages (None each when disabled), with log lines printed above them."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from lipsync_triton.log import LOGGER

    bars = [ProgressBar(label) if enabled else None for label in labels]
    try:
        with logging_redirect_tqdm(loggers=[LOGGER]):
            yield bars
    finally:
        for bar in bars:
            if bar is not None:
                bar.close()
