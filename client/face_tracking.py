"""Face boxes for the presenter frames a job uses, detected through Triton (or read from the presenter
cache): batched requests in flight, one person followed over time, then gap filling, smoothing, pads.
Detection runs beside generation (see box_stream)."""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from lipsync_triton import log
from lipsync_triton.preprocessing.faces import (SCORE_THRESHOLD, FaceFollower, FaceSelector, Letterbox, faces_from_candidates,
                                                fill_missing, pad_and_clip, smooth)
from lipsync_triton.preprocessing.video import FrameSource, FrameTransform
from .box_stream import DetectionLog, StreamedBoxes
from .coarse_to_fine import Candidate, Chunk, coarse_to_fine
from .in_flight import InFlight, JobCancel
from .prefetch import prefetch
from .presenter_cache import CachedDetections, PresenterCache
from .progress import ProgressCallback
from .stage_timer import StageTimer
from .model_io import detector_candidates, detector_request
from .triton_client import Cancelled, TritonPool

# CenterFace's box edges jitter by 3-4% of the face height from frame to frame on their own (up to
# 12 px on a 155 px face of a smoothly drifting clip), so a smaller threshold would refine on noise.
REFINE_MOTION = 0.06
KEYFRAME_CHUNKS_AHEAD = 3
SMOOTH_WINDOW = 5  # the reference's forward-looking mean: box i needs frames i..i+4


@dataclass(frozen=True)
class TrackingSpec:
    """Everything that decides a presenter's face boxes. It parameterises the tracking AND, but for
    what is applied after the cache (pads, smoothing), is the presenter-cache key (with the video's
    hash), so the two can never drift."""

    detector: str  # the served detector's identity (content hash its export wrote into the config)
    detector_size: tuple[int, int]  # H, W of the detector input
    transform: FrameTransform
    static: bool
    select: str  # FaceSelector key
    pads: tuple[int, int, int, int]
    smooth: bool
    threshold: float = SCORE_THRESHOLD
    detect_every: int = 1  # candidate frames 0, k, 2k, ...; boxes between two detections are interpolated
    keyframe_every: int = 0  # detect every n-th frame first (rounded down to a multiple of detect_every),
    # candidates between only where the face moved (0: all)
    motion: float = REFINE_MOTION  # a move (any box edge, fraction of the face height) that refines an interval

    def cache_key_fields(self) -> dict:
        """The fields that decide the raw detections the cache stores: not pads or smoothing, which
        `boxes_from_detections` applies to them on every use (a job with other pads hits the cache
        that a presenter's registration filled)."""
        return {k: v for k, v in asdict(self).items() if k not in ("pads", "smooth")}


class FixedBoxes:
    """Boxes known up front: a fixed --box, a still image, a presenter-cache hit."""

    def __init__(self, boxes: np.ndarray):
        self.array = boxes

    def box(self, index: int) -> np.ndarray:
        return self.array[index % len(self.array)]  # one row for --box or a still image


@dataclass
class TrackResult:
    boxes: FixedBoxes | StreamedBoxes  # .box(source frame index) -> int x1,y1,x2,y2
    cache_hit: bool
    filled: int = 0  # frames without the followed face that reuse the nearest box (final after `finish`)
    detector_requests: int = 0
    _thread: threading.Thread | None = None
    _stop: threading.Event | None = None

    @property
    def error(self) -> BaseException | None:
        return self.boxes.detections.error if isinstance(self.boxes, StreamedBoxes) else None

    def run_in_background(self, detect: Callable[[], None]) -> None:
        """Detection on its own thread; `finish` and `abort` wait for it."""
        self._thread = threading.Thread(target=detect, name="face-tracking", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        """Wait for background detection (it may go on past the frames generation needed, to fill
        the cache); raise its error."""
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()


class Detection:
    """The followed face's raw box per detected frame, into a DetectionLog, for at most `limit` frames.

    Candidates are every `spec.detect_every`-th frame (and the last decoded one, so the tail is
    interpolated, not extrapolated); the detector sees the keyframes among them and, where the face
    moved, more (see coarse_to_fine). Boxes of frames not detected are interpolated by the log.
    `requests` counts the detector requests sent."""

    def __init__(self, source: FrameSource, pool: TritonPool, spec: TrackingSpec, limit: int | None, batch_size: int,
                 timer: StageTimer, stop: threading.Event | None = None):
        self.source, self.pool, self.spec, self.limit = source, pool, spec, limit
        self.batch_size, self.timer, self.stop = batch_size, timer, stop
        self.letterbox = Letterbox(*spec.detector_size)
        self.step = max(1, spec.detect_every)
        self.keyframe_every = max(self.step, spec.keyframe_every // self.step * self.step)  # a multiple of the stride
        self.requests = 0

    def _sampled(self) -> Iterator[tuple[int, np.ndarray, float]]:
        """(frame index, detector image, scale) for each candidate frame."""
        source, letterbox, step = self.source, self.letterbox, self.step
        if source.plain_video:  # ffmpeg samples, scales and pads: only the candidate frames are piped
            nw, nh, scale = letterbox.fitted(source.info.height, source.info.width)
            for index, image in source.sampled_frames((nw, nh), (letterbox.width, letterbox.height), step, self.limit):
                yield index, image, scale
            return
        to_input = letterbox.apply_i420 if source.pix_fmt == "yuv420p" else letterbox.apply
        skipped = None  # the newest skipped frame: still valid after the loop (the ring holds two)
        for index, frame in enumerate(source.frames(ring=2, limit=self.limit)):
            if index % step:
                skipped = (index, frame)
                continue
            skipped = None
            with self.timer.stage("detect"):
                image, scale = to_input(frame)  # a copy: the ring reuses the frame
            yield index, image, scale
        if skipped is not None:  # the final frame: a candidate so the tail is interpolated
            yield skipped[0], *to_input(skipped[1])

    def _candidates(self) -> Iterator[Candidate]:
        # The decoder runs ahead while this thread waits for the detector: decode overlaps inference.
        for index, image, scale in prefetch(self._sampled(), 2 * self.batch_size):
            if self.stop is not None and self.stop.is_set():
                raise Cancelled("face detection stopped")
            yield Candidate(index, image, scale)

    @staticmethod
    def _request(part: list[Candidate]) -> tuple:
        return detector_request(np.stack([c.image for c in part]))

    def _faces(self, part: list[Candidate], out: dict) -> list[np.ndarray]:
        self.requests += 1
        return [faces_from_candidates(scores, boxes, c.scale, self.spec.threshold)
                for c, scores, boxes in zip(part, *detector_candidates(out))]

    def run(self, flights: tuple[InFlight, InFlight], sink: DetectionLog, progress: ProgressCallback | None) -> None:
        keyframe_flight, refine_flight = flights
        infer, request, size = self.pool.infer, self._request, self.batch_size

        def detect_ahead(chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, list[np.ndarray]]]:
            for chunk, out in keyframe_flight.map(infer, ((request(c.keys), c) for c in chunks)):
                yield chunk, self._faces(chunk.keys, out)

        def detect(batch: list[Candidate]) -> list[np.ndarray]:
            parts = (batch[i:i + size] for i in range(0, len(batch), size))
            return [f for part, out in refine_flight.map(infer, ((request(p), p) for p in parts)) for f in self._faces(part, out)]

        follower = FaceFollower(FaceSelector.parse(self.spec.select))
        total = self.limit or self.source.info.frames or 0
        # A chunk's keyframes are one request; with keyframes far apart, fewer per chunk bound the frames held.
        chunk_keyframes = max(1, min(size, 2 * size * self.step // self.keyframe_every))
        done = 0
        for index, found in coarse_to_fine(self._candidates(), detect, detect_ahead, follower, self.keyframe_every,
                                           self.spec.motion, chunk_keyframes):
            sink.add(index, follower.next(found, index))
            done = index + 1
            if progress:
                progress(done, max(total, done))
        if progress and done:
            progress(done, done)  # detection is over (its last candidate may come before the estimate): the bar ends now


def boxes_from_detections(raw: np.ndarray, spec: TrackingSpec, width: int, height: int, source: str) -> tuple[np.ndarray, int]:
    """Raw followed-face boxes -> gap-filled, smoothed, padded and clipped int boxes + frames filled."""
    boxes, filled = fill_missing([None if np.isnan(b).any() else b for b in raw], source)
    if spec.smooth:
        boxes = smooth(boxes, SMOOTH_WINDOW)
    return pad_and_clip(boxes, spec.pads, width, height), filled


def track_faces(source: FrameSource, pool: TritonPool, spec: TrackingSpec, *, frames_needed: int, batch_size: int,
                in_flight: int, cancel: JobCancel, cache: PresenterCache | None, timer: StageTimer, whole_video: bool = False,
                progress: ProgressCallback | None = None) -> TrackResult:
    """Boxes for source frames 0..frames_needed-1 (fewer when the video is shorter; a job loops it).

    A presenter-cache hit returns at once. Otherwise detection runs in a background thread on its
    own decode, and `result.boxes.box(i)` hands generation each frame's box as soon as the frames it
    depends on are detected, so detection and generation overlap. Only the frames the audio uses
    are detected (plus the smoothing look-ahead), unless `whole_video` fills the presenter cache
    for every later speech on purpose. Call `finish()` after generation (or `abort()` on failure)."""
    limit = None if whole_video or source.still else frames_needed + SMOOTH_WINDOW - 1
    key = cache.key(source.path, spec.cache_key_fields()) if cache is not None else None
    entry = cache.load(key) if cache is not None else None
    if entry is not None and entry.covers(limit):
        log.event("presenter_cache", status="hit", key=key, frames=len(entry.raw))
        boxes, filled = boxes_from_detections(entry.raw, spec, source.width, source.height, str(source.path))
        return TrackResult(FixedBoxes(boxes), True, filled)
    detections = DetectionLog()
    streamed = StreamedBoxes(detections, SMOOTH_WINDOW if spec.smooth else 1, spec.pads, source.width, source.height,
                             str(source.path), cancel)
    stop = threading.Event()
    result = TrackResult(streamed, False, _stop=stop)

    def run() -> None:
        try:
            # Keyframe chunks run KEYFRAME_CHUNKS_AHEAD requests ahead of the refinement (bounds the frames held).
            detection = Detection(source, pool, spec, limit, batch_size, timer, stop)
            with InFlight(KEYFRAME_CHUNKS_AHEAD, cancel, "keyframes") as ahead, InFlight(in_flight, cancel, "refine") as refine:
                detection.run((ahead, refine), detections, progress)
            result.detector_requests = detection.requests
            raw = detections.raw()
            result.filled = int(np.isnan(raw).any(axis=1).sum())
            if cache is not None and len(raw):
                stored = CachedDetections(raw, complete=limit is None or len(raw) < limit)
                cache.store(key, stored)
                log.event("presenter_cache", status="stored", key=key, frames=len(raw), complete=stored.complete)
            log.event("faces_tracked", frames=len(raw), filled=result.filled, detector_requests=result.detector_requests)
            detections.finish()
        except BaseException as exc:  # handed to the generating thread through box()/finish()
            detections.finish(exc)

    result.run_in_background(run)
    return result
