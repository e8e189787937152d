"""The main job: presenter video/photo + speech -> lip-synced mp4, through Triton gRPC.

Data path: audio -> mel windows | video -> face boxes (Triton detector or presenter cache) ->
96x96 crops -> Wav2Lip on Triton (many requests in flight so the dynamic batcher fills batches)
-> soft paste-back -> ffmpeg H.264/AAC. Frames stream through a bounded window: memory does not
grow with video length.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lipsync_triton import log
from lipsync_triton.errors import LipsyncError, OptionError
from lipsync_triton.memory import pin_large_allocations_to_mmap
from lipsync_triton.preprocessing.audio import load_mel
from lipsync_triton.preprocessing.mel import MEL_WINDOW, frames_covering_speech, mel_window_starts
from lipsync_triton.preprocessing.crops import crop_face_i420, paste_face_i420
from lipsync_triton.preprocessing.faces import FaceSelector
from lipsync_triton.preprocessing.video import FrameSource, FrameTransform
from .face_tracking import FixedBoxes, TrackingSpec, TrackResult, track_faces
from .in_flight import InFlight, JobCancel
from .mp4_writer import Mp4Writer
from .options import GenerateOptions, validate
from .presenter_cache import PresenterCache
from .progress import ProgressCallback
from .stage_timer import StageTimer
from lipsync_triton.model_contract import models_needed
from .model_io import wav2lip_faces, wav2lip_request
from .triton_client import DETECTOR_MODEL, WAV2LIP_MODEL, Cancelled, TritonPool


@dataclass
class GenerateResult:
    outfile: str
    frames: int
    video_fps: float  # the output video's frame rate (throughput is frames_per_second)
    width: int
    height: int
    seconds: float
    frames_per_second: float
    cache_hit: bool
    frames_without_face: int
    detector_requests: int
    wav2lip_requests: int
    stages: dict = field(default_factory=dict)
    weights: str = "unknown"  # the served Wav2Lip weights: "random" (a blurred mouth) or "checkpoint sha256:..."
    warnings: list[str] = field(default_factory=list)  # what succeeded but is probably not what was wanted

    def as_dict(self) -> dict:
        return asdict(self)


SILENT_MEL = -3.0  # the loudest mel value of a file without sound above about -60 dB (speech peaks above 1)


def speech_warnings(mel: np.ndarray) -> list[str]:
    """A speech the job can lip-sync but that is probably a mistake: silence (the mouth stays still)."""
    if mel.size and float(mel.max()) < SILENT_MEL:
        return ["the speech is silent (nothing louder than about -60 dB): the mouth will not move; check the audio file"]
    return []


def _fixed_box(opts: GenerateOptions, source: FrameSource) -> np.ndarray:
    top, bottom, left, right = opts.box
    if not (0 <= left < right <= source.width and 0 <= top < bottom <= source.height):
        raise OptionError("box", f"{opts.box} lies outside the {source.width}x{source.height} frame")
    return np.array([[left, top, right, bottom]], np.int32)


def track_boxes(opts: GenerateOptions, source: FrameSource, pool: TritonPool, models: dict, n_frames: int, selector: FaceSelector,
           transform: FrameTransform, cancel: JobCancel, timer: StageTimer, progress: ProgressCallback | None) -> TrackResult:
    """The face box of every presenter frame the job uses: the fixed --box, or the followed face."""
    if opts.box:
        return TrackResult(FixedBoxes(_fixed_box(opts, source)), False)
    detector = models[DETECTOR_MODEL]
    spec = TrackingSpec(detector=detector.identity, detector_size=tuple(detector.input_dims["image"][:2]), transform=transform,
                        static=source.still, select=selector.key(), pads=tuple(opts.pads), smooth=not opts.nosmooth,
                        detect_every=1 if source.still else opts.detect_every,
                        keyframe_every=0 if source.still else opts.keyframe_every)
    return track_faces(source, pool, spec, frames_needed=n_frames,
                       batch_size=min(opts.face_det_batch_size, detector.max_batch_size or opts.face_det_batch_size),
                       in_flight=opts.in_flight, cancel=cancel, cache=PresenterCache(opts.cache_dir) if opts.use_cache else None,
                       timer=timer, whole_video=opts.cache_whole_video, progress=progress)


def generate(face: str | Path, audio: str | Path, outfile: str | Path, urls: list[str] | str,
             options: GenerateOptions | None = None, progress: ProgressCallback | None = None,
             cancel: threading.Event | None = None, detect_progress: ProgressCallback | None = None) -> GenerateResult:
    """Run one lip-sync job. Raises LipsyncError (one-line message) on bad input; writes nothing then.

    `progress(done, total)` follows the generated frames; `detect_progress` the face-detection pass
    (skipped on a presenter-cache hit). Setting `cancel` stops the job with `Cancelled`; the job
    never sets it (an internal failure stops only this job's own requests).
    """
    opts = options or GenerateOptions()
    validate(opts)
    pin_large_allocations_to_mmap()
    started = time.monotonic()
    timer = StageTimer()
    selector = FaceSelector.parse(opts.face_select)
    transform = FrameTransform(opts.resize_factor, tuple(opts.crop), opts.rotate)
    job_cancel = JobCancel(cancel)
    pool = TritonPool(urls, retry_seconds=opts.retry_seconds, request_timeout=opts.request_timeout, cancel=job_cancel,
                      traceparent=opts.traceparent)
    # The video's probe and the servers' checks run while the speech is decoded (each ffmpeg or
    # ffprobe start costs ~80 ms, and the server idles until the first request).
    with ThreadPoolExecutor(2, thread_name_prefix="job-start") as start:
        # Frames stay I420 from decoder to encoder: only face boxes are converted (see preprocessing.i420).
        opened = start.submit(FrameSource, face, transform, static=opts.static, fps=opts.fps, pix_fmt="yuv420p",
                              limits=opts.limits)
        ready = start.submit(pool.check_ready, models_needed(opts.box is not None), opts.server_wait_s)
        with timer.stage("mel"):
            mel = load_mel(audio, opts.limits)
        source, models = opened.result(), ready.result()
    warnings = speech_warnings(mel)
    for warning in warnings:
        log.warn(warning, audio=str(audio))
    starts = mel_window_starts(mel.shape[1], source.fps)
    n_frames = len(starts)  # generated frames, as the reference makes them
    hold = max(0, frames_covering_speech(mel.shape[1], source.fps) - n_frames)  # the last frame, held to the speech's end
    n_out = n_frames + hold

    max_batch = models[WAV2LIP_MODEL].max_batch_size
    batch_size = min(opts.wav2lip_batch_size, max_batch) if max_batch else opts.wav2lip_batch_size

    tracked = track_boxes(opts, source, pool, models, n_frames, selector, transform, job_cancel, timer, detect_progress)

    def wav2lip_requests():
        """Decode -> crop -> batch: ((infer args), (frames, boxes)) per batch of frames."""
        frames, frame_boxes, crops, mels = [], [], [], []
        # A decoded frame waits for at most in_flight batches (InFlight.map), so a ring one frame
        # larger than in_flight * batch never overwrites a frame still to be pasted.
        ring = opts.in_flight * batch_size + 1
        for frame_index, (src_index, frame) in enumerate(timer.timed_iter("decode", source.looped(n_frames, ring=ring))):
            if job_cancel.is_set():
                raise Cancelled("job cancelled")
            with timer.stage("detect"):  # waits only while detection is behind this frame
                box = tracked.boxes.box(src_index)
            with timer.stage("paste"):
                crops.append(crop_face_i420(frame, box))
            mels.append(mel[:, starts[frame_index]:starts[frame_index] + MEL_WINDOW])
            frames.append(frame)
            frame_boxes.append(box)
            if len(frames) == batch_size or frame_index == n_frames - 1:
                yield wav2lip_request(np.stack(mels), np.stack(crops)), (frames, frame_boxes)
                frames, frame_boxes, crops, mels = [], [], [], []

    writer = Mp4Writer(outfile, source.width, source.height, source.fps, audio, crf=opts.crf, preset=opts.preset,
                       x264_params=opts.x264_params, pix_fmt="yuv420p")
    done = wav_requests = 0
    last_frame = None
    try:
        with InFlight(opts.in_flight, job_cancel, "wav2lip") as flight:
            for (frames, frame_boxes), out in flight.map(pool.infer, wav2lip_requests()):
                wav_requests += 1
                for frame, box, face_out in zip(frames, frame_boxes, wav2lip_faces(out)):
                    with timer.stage("paste"):
                        paste_face_i420(frame, box, face_out, blend=not opts.hard_paste)
                    with timer.stage("encode"):
                        writer.write(frame)
                    last_frame = frame
                done += len(frames)
                if progress:
                    progress(done, n_out)
            timer.add("generate", flight.wait_seconds)
        if done != n_frames:
            raise LipsyncError(f"{face} produced {done} of {n_frames} frames; the video may be truncated")
        with timer.stage("encode"):
            for _ in range(hold):
                writer.write(last_frame)
        if hold and progress:
            progress(n_out, n_out)
        tracked.finish()
        with timer.stage("encode"):
            writer.close()
    except BaseException as exc:
        writer.abort()
        job_cancel.set()  # background detection stops too
        tracked.abort()
        first = tracked.error
        if isinstance(exc, Cancelled) and first is not None and not isinstance(first, Cancelled):
            raise first from None  # detection failed first and stopped the job: say why
        raise
    seconds = time.monotonic() - started
    result = GenerateResult(
        outfile=str(outfile), frames=n_out, video_fps=source.fps, width=source.width, height=source.height,
        seconds=round(seconds, 3), frames_per_second=round(n_out / seconds, 3), cache_hit=tracked.cache_hit,
        frames_without_face=tracked.filled, detector_requests=tracked.detector_requests, wav2lip_requests=wav_requests,
        stages=timer.as_dict(), weights=models[WAV2LIP_MODEL].weights, warnings=warnings,  # every request went to servers of this model (pool pins it)
    )
    log.event("generated", outfile=str(outfile), frames=n_out, fps_out=source.fps, seconds=result.seconds,
              frames_per_s=result.frames_per_second, cache_hit=tracked.cache_hit, frames_without_face=tracked.filled,
              weights=result.weights)
    return result


def track_presenter(face: str | Path, urls: list[str] | str, options: GenerateOptions | None = None,
                    cancel: threading.Event | None = None) -> int:
    """Track the faces of EVERY frame of a presenter into the presenter cache (what registering a
    presenter does once), so that each later job with it skips detection. Raises LipsyncError when
    no frame shows a face. Returns the presenter's frame count as its header states it (0: unstated)."""
    opts = dataclasses.replace(options or GenerateOptions(), cache_whole_video=True, use_cache=True)
    validate(opts)
    transform = FrameTransform(opts.resize_factor, tuple(opts.crop), opts.rotate)
    job_cancel = JobCancel(cancel)
    pool = TritonPool(urls, retry_seconds=opts.retry_seconds, request_timeout=opts.request_timeout, cancel=job_cancel,
                      traceparent=opts.traceparent)
    source = FrameSource(face, transform, static=opts.static, fps=opts.fps, pix_fmt="yuv420p", limits=opts.limits)
    models = pool.check_ready(models_needed(fixed_box=False), opts.server_wait_s)
    tracked = track_boxes(opts, source, pool, models, 1, FaceSelector.parse(opts.face_select), transform, job_cancel,
                     StageTimer(), None)
    try:
        tracked.finish()
        tracked.boxes.box(0)  # "no face found in any frame" surfaces here
    except BaseException:
        tracked.abort()
        raise
    return int(source.info.frames or 0)


class LipSyncClient:
    """Python API for integrators and job workers.

    >>> client = LipSyncClient(["127.0.0.1:8001"])             # one or several Triton gRPC URLs
    >>> client.generate("presenter.mp4", "speech.wav", "out.mp4", pads=(0, 20, 0, 0))
    """

    def __init__(self, urls: list[str] | str = "127.0.0.1:8001", cache_dir: str | Path | None = None):
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def generate(self, face: str | Path, audio: str | Path, outfile: str | Path, *,
                 progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                 detect_progress: ProgressCallback | None = None, **options) -> GenerateResult:
        unknown = set(options) - {f.name for f in dataclasses.fields(GenerateOptions)}
        if unknown:
            raise LipsyncError(f"unknown option(s) {', '.join(sorted(unknown))}; see GenerateOptions")
        if self.cache_dir is not None:
            options.setdefault("cache_dir", self.cache_dir)
        return generate(face, audio, outfile, self.urls, GenerateOptions(**options), progress=progress, cancel=cancel,
                        detect_progress=detect_progress)
