"""Face boxes for every frame of a presenter video, detected through Triton (or read from the
presenter cache): batched requests, several in flight, then gap filling, smoothing and padding."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lipsync_triton import log
from lipsync_triton.preprocessing.faces import (FaceSelector, Letterbox, faces_from_candidates, fill_missing,
                                                pad_and_clip, smooth)
from lipsync_triton.preprocessing.video import FrameSource
from .presenter_cache import PresenterCache
from .progress import ProgressCallback
from .stage_timer import StageTimer
from .triton_client import DETECTOR_MODEL, TritonPool


@dataclass
class TrackResult:
    boxes: np.ndarray  # int32 [N_source_frames, 4] x1,y1,x2,y2 after pads, smoothing and clipping
    filled: int  # frames without a detected face that reuse the nearest box
    cache_hit: bool
    detector_requests: int


def _detect_all(source: FrameSource, pool: TritonPool, letterbox: Letterbox, batch_size: int, in_flight: int,
                selector: FaceSelector, timer: StageTimer, progress: ProgressCallback | None) -> tuple[list, int]:
    chosen: list[np.ndarray | None] = []
    pending: deque = deque()
    requests = 0
    total = source.frame_count if source.still else (source.info.frames or 0)

    def collect(item) -> None:
        future, scales = item
        with timer.stage("detect"):
            out = future.result()
        for scores, boxes, scale in zip(out["scores"], out["boxes"], scales):
            chosen.append(selector.choose(faces_from_candidates(scores, boxes, scale)))
        if progress:
            progress(len(chosen), max(total, len(chosen)))

    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="detect") as executor:
        batch, scales = [], []

        def submit() -> None:
            nonlocal requests
            array = np.stack(batch)
            pending.append((executor.submit(pool.infer, DETECTOR_MODEL, {"image": array}, ["scores", "boxes"]), list(scales)))
            requests += 1
            batch.clear()
            scales.clear()
            while len(pending) >= in_flight:
                collect(pending.popleft())

        for frame in timer.timed_iter("decode", source.frames(ring=2)):  # letterbox copies each frame at once
            with timer.stage("detect"):
                image, scale = letterbox.apply(frame)
            batch.append(image)
            scales.append(scale)
            if len(batch) >= batch_size:
                submit()
        if batch:
            submit()
        while pending:
            collect(pending.popleft())
    return chosen, requests


def track_faces(source: FrameSource, pool: TritonPool, detector_hw: tuple[int, int], *, pads, selector: FaceSelector,
                nosmooth: bool, batch_size: int, in_flight: int, cache: PresenterCache | None,
                cache_options: dict, timer: StageTimer, progress: ProgressCallback | None = None) -> TrackResult:
    key = None
    if cache is not None:
        key = cache.key(source.path, cache_options)
        hit = cache.load(key)
        if hit is not None:
            log.event("presenter_cache", status="hit", key=key, frames=len(hit[0]))
            return TrackResult(hit[0], hit[1], True, 0)
    chosen, requests = _detect_all(source, pool, Letterbox(*detector_hw), batch_size, in_flight, selector, timer, progress)
    boxes, filled = fill_missing(chosen, str(source.path))
    if not nosmooth:
        boxes = smooth(boxes)
    boxes = pad_and_clip(boxes, pads, source.width, source.height)
    log.event("faces_tracked", frames=len(boxes), filled=filled, detector_requests=requests)
    if cache is not None and key is not None:
        cache.store(key, boxes, filled)
        log.event("presenter_cache", status="stored", key=key)
    return TrackResult(boxes, filled, False, requests)
