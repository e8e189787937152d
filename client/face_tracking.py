"""Face boxes for the presenter frames a job uses, detected through Triton (or read from the presenter
cache): batched requests in flight, one person followed over time, then gap filling, smoothing, pads."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lipsync_triton import log
from lipsync_triton.preprocessing.faces import (SCORE_THRESHOLD, FaceFollower, FaceSelector, Letterbox, faces_from_candidates,
                                                fill_missing, pad_and_clip, smooth)
from lipsync_triton.preprocessing.video import FrameSource, FrameTransform
from .in_flight import InFlight
from .presenter_cache import CachedDetections, PresenterCache
from .progress import ProgressCallback
from .stage_timer import StageTimer
from .triton_client import DETECTOR_MODEL, TritonPool

SMOOTH_WINDOW = 5  # the reference's forward-looking mean: box i needs frames i..i+4
DETECTOR_OUTPUTS = ["scores", "boxes"]


@dataclass(frozen=True)
class TrackingSpec:
    """Everything that decides a presenter's face boxes. It parameterises the tracking AND is the
    presenter-cache key (with the video's hash), so the two can never drift."""

    detector: str  # the served detector's identity (content hash its export wrote into the config)
    detector_size: tuple[int, int]  # H, W of the detector input
    transform: FrameTransform
    static: bool
    select: str  # FaceSelector key
    pads: tuple[int, int, int, int]
    smooth: bool
    threshold: float = SCORE_THRESHOLD

    def cache_key_fields(self) -> dict:
        return asdict(self)


@dataclass
class TrackResult:
    boxes: np.ndarray  # int32 [N, 4] x1,y1,x2,y2 after pads, smoothing and clipping, for source frames 0..N-1
    filled: int  # frames without the followed face that reuse the nearest box
    cache_hit: bool
    detector_requests: int


def _detect(source: FrameSource, pool: TritonPool, spec: TrackingSpec, limit: int | None, batch_size: int,
            flight: InFlight, timer: StageTimer, progress: ProgressCallback | None) -> tuple[np.ndarray, int]:
    """The followed face's raw box per decoded frame (NaN rows where absent), for at most `limit` frames."""
    letterbox = Letterbox(*spec.detector_size)
    follower = FaceFollower(FaceSelector.parse(spec.select))
    total = limit or source.info.frames or 0

    def requests():
        images, scales = [], []
        for frame in timer.timed_iter("decode", source.frames(ring=2, limit=limit)):  # letterbox copies at once
            with timer.stage("detect"):
                image, scale = letterbox.apply(frame)
            images.append(image)
            scales.append(scale)
            if len(images) == batch_size:
                yield (DETECTOR_MODEL, {"image": np.stack(images)}, DETECTOR_OUTPUTS), scales
                images, scales = [], []
        if images:
            yield (DETECTOR_MODEL, {"image": np.stack(images)}, DETECTOR_OUTPUTS), scales

    raw: list[np.ndarray] = []
    n_requests = 0
    for scales, out in flight.map(pool.infer, requests()):
        n_requests += 1
        for scores, boxes, scale in zip(out["scores"], out["boxes"], scales):
            chosen = follower.next(faces_from_candidates(scores, boxes, scale, spec.threshold))
            raw.append(np.full(4, np.nan, np.float32) if chosen is None else np.asarray(chosen, np.float32))
        if progress:
            progress(len(raw), max(total, len(raw)))
    timer.add("detect", flight.wait_seconds)
    return np.stack(raw) if raw else np.zeros((0, 4), np.float32), n_requests


def boxes_from_detections(raw: np.ndarray, spec: TrackingSpec, width: int, height: int, source: str) -> tuple[np.ndarray, int]:
    """Raw followed-face boxes -> gap-filled, smoothed, padded and clipped int boxes + frames filled."""
    boxes, filled = fill_missing([None if np.isnan(b).any() else b for b in raw], source)
    if spec.smooth:
        boxes = smooth(boxes, SMOOTH_WINDOW)
    return pad_and_clip(boxes, spec.pads, width, height), filled


def track_faces(source: FrameSource, pool: TritonPool, spec: TrackingSpec, *, frames_needed: int, batch_size: int,
                flight: InFlight, cache: PresenterCache | None, timer: StageTimer, whole_video: bool = False,
                progress: ProgressCallback | None = None) -> TrackResult:
    """Boxes for source frames 0..frames_needed-1 (fewer when the video is shorter; a job loops it).

    Only the frames the audio uses are detected (plus the smoothing look-ahead), unless
    `whole_video` fills the presenter cache for every later speech on purpose."""
    limit = None if whole_video or source.still else frames_needed + SMOOTH_WINDOW - 1
    key = cache.key(source.path, spec.cache_key_fields()) if cache is not None else None
    entry = cache.load(key) if cache is not None else None
    hit = entry is not None and entry.covers(limit)
    requests = 0
    if hit:
        log.event("presenter_cache", status="hit", key=key, frames=len(entry.raw))
    else:
        raw, requests = _detect(source, pool, spec, limit, batch_size, flight, timer, progress)
        entry = CachedDetections(raw, complete=limit is None or len(raw) < limit)
        if cache is not None:
            cache.store(key, entry)
            log.event("presenter_cache", status="stored", key=key, frames=len(raw), complete=entry.complete)
    boxes, filled = boxes_from_detections(entry.raw, spec, source.width, source.height, str(source.path))
    log.event("faces_tracked", frames=len(boxes), filled=filled, detector_requests=requests)
    return TrackResult(boxes, filled, hit, requests)
