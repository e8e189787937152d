"""Face boxes handed to generation while detection is still running (one job, two threads).

`DetectionLog` receives the followed face's raw box per detected frame, in frame order; frames the
detection stride skipped are interpolated when the next detection arrives. `StreamedBoxes.box(i)`
returns frame i's final box (gap-filled from the nearest face, smoothed, padded, clipped) as soon
as the frames it depends on are known, and is exactly what the whole-video computation
(`boxes_from_detections`) gives for that frame: generation never waits for the whole video.
"""
from __future__ import annotations

import bisect
import threading

import numpy as np

from lipsync_triton.errors import LipsyncError, NoFaceFound
from lipsync_triton.preprocessing.faces import pad_and_clip
from .in_flight import POLL_SECONDS, JobCancel
from .triton_client import Cancelled

NO_FACE = np.full(4, np.nan, np.float32)


class DetectionLog:
    """Raw boxes per frame as they arrive (NaN rows: no face). Thread-safe; readers wait on it."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.found: list[int] = []  # rows holding a face, ascending
        self.done = False
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self._last = -1  # the newest detected frame

    def add(self, index: int, box: np.ndarray | None) -> None:
        """Frame `index`'s detection (None: no face); rows since the previous detection are the
        linear interpolation between the two when both hold a face, else empty."""
        box = NO_FACE if box is None else np.asarray(box, np.float32)
        with self.cond:
            a = self._last
            ends_have_faces = a >= 0 and not np.isnan(self.rows[a]).any() and not np.isnan(box).any()
            for k in range(a + 1, index):
                if ends_have_faces:
                    t = (k - a) / (index - a)
                    self._append((self.rows[a] + (box - self.rows[a]) * t).astype(np.float32))  # exact when still
                else:
                    self._append(NO_FACE)
            self._append(box)
            self._last = index
            self.cond.notify_all()

    def _append(self, row: np.ndarray) -> None:
        if not np.isnan(row).any():
            self.found.append(len(self.rows))
        self.rows.append(row)

    def finish(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.done, self.error = True, error
            self.cond.notify_all()

    def raw(self) -> np.ndarray:
        with self.cond:
            return np.stack(self.rows) if self.rows else np.zeros((0, 4), np.float32)


class StreamedBoxes:
    """Final boxes from a (possibly still growing) `DetectionLog`."""

    def __init__(self, detections: DetectionLog, smooth_window: int, pads: tuple[int, int, int, int], width: int,
                 height: int, source: str, cancel: JobCancel | None = None):
        self.detections = detections
        self.window = smooth_window  # 1 = no smoothing
        self.pads, self.width, self.height, self.source = pads, width, height, source
        self.cancel = cancel

    def box(self, index: int) -> np.ndarray:
        """Frame `index`'s int box x1,y1,x2,y2; waits until the frames it depends on are detected."""
        log = self.detections
        with log.cond:
            while True:
                if log.error is not None:
                    raise log.error
                box = self._determined(index)
                if box is not None:
                    return box
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled("job cancelled")
                log.cond.wait(POLL_SECONDS)

    def _determined(self, i: int) -> np.ndarray | None:
        log = self.detections
        known, done = len(log.rows), log.done
        if done and not log.found:
            raise NoFaceFound(self.source)
        if done:
            if i >= known:
                raise LipsyncError(f"{self.source}: frame {i} was never decoded ({known} frames)")
            lo = i if i + self.window <= known else max(0, known - self.window)
            hi = min(lo + self.window, known)
        elif i + self.window <= known:  # the clamp at the video's end needs its length
            lo, hi = i, i + self.window
        else:
            return None
        rows = []
        for k in range(lo, hi):
            row = self._filled(k, known, done)
            if row is None:
                return None
            rows.append(row)
        mean = np.stack(rows).mean(axis=0)
        return pad_and_clip(mean[None], self.pads, self.width, self.height)[0]

    def _filled(self, k: int, known: int, done: bool) -> np.ndarray | None:
        """Row k, or the nearest row with a face (the earlier one on a tie), once no later detection can change it."""
        log = self.detections
        row = log.rows[k]
        if not np.isnan(row).any():
            return row
        at = bisect.bisect_left(log.found, k)
        before = log.found[at - 1] if at > 0 else None
        after = log.found[at] if at < len(log.found) else None
        if after is not None and (before is None or after - k < k - before):
            return log.rows[after]
        if before is not None and (after is not None or done or known >= 2 * k - before):
            return log.rows[before]
        return None
