"""The main job: presenter video/photo + speech -> lip-synced mp4, through Triton gRPC.

Data path: audio -> mel windows | video -> face boxes (Triton detector or presenter cache) ->
96x96 crops -> Wav2Lip on Triton (many requests in flight so the dynamic batcher fills batches)
-> soft paste-back -> ffmpeg H.264/AAC. Frames stream through a bounded window: memory does not
grow with video length.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lipsync_triton import log
from lipsync_triton.errors import LipsyncError
from lipsync_triton.memory import pin_large_allocations_to_mmap
from lipsync_triton.preprocessing.audio import MEL_WINDOW, load_audio, mel_window_starts, melspectrogram
from lipsync_triton.preprocessing.crops import crop_face, paste_face
from lipsync_triton.preprocessing.faces import FaceSelector
from lipsync_triton.preprocessing.video import FrameSource, FrameTransform
from .face_tracking import track_faces
from .mp4_writer import Mp4Writer
from .presenter_cache import PresenterCache
from .progress import ProgressCallback
from .stage_timer import StageTimer
from .triton_client import DETECTOR_MODEL, WAV2LIP_MODEL, Cancelled, TritonPool


@dataclass
class GenerateOptions:
    """The reference inference.py options (same meanings) plus the service's own."""

    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right
    resize_factor: int = 1
    crop: tuple[int, int, int, int] = (0, -1, 0, -1)  # top, bottom, left, right; -1 = frame edge
    box: tuple[int, int, int, int] | None = None  # top, bottom, left, right: fixed box, skips detection
    rotate: bool = False
    nosmooth: bool = False
    static: bool = False
    fps: float = 25.0  # for still images
    face_det_batch_size: int = 8
    wav2lip_batch_size: int = 16
    face_select: str = "largest"
    blend: bool = True  # soft paste over the lower face; False = the reference's hard box paste
    use_cache: bool = True
    cache_dir: Path | None = None
    in_flight: int = 4
    crf: int = 18
    preset: str = "veryfast"


@dataclass
class GenerateResult:
    outfile: str
    frames: int
    fps: float
    width: int
    height: int
    seconds: float
    frames_per_second: float
    cache_hit: bool
    frames_without_face: int
    detector_requests: int
    wav2lip_requests: int
    stages: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _validate(opts: GenerateOptions) -> None:
    if opts.resize_factor < 1:
        raise LipsyncError(f"--resize-factor must be >= 1, got {opts.resize_factor}")
    if opts.wav2lip_batch_size < 1 or opts.face_det_batch_size < 1:
        raise LipsyncError("batch sizes must be >= 1")
    if opts.fps <= 0:
        raise LipsyncError(f"--fps must be positive, got {opts.fps}")
    if opts.in_flight < 1:
        raise LipsyncError("--in-flight must be >= 1")


def generate(face: str | Path, audio: str | Path, outfile: str | Path, urls: list[str] | str,
             options: GenerateOptions | None = None, progress: ProgressCallback | None = None,
             cancel: threading.Event | None = None, detect_progress: ProgressCallback | None = None) -> GenerateResult:
    """Run one lip-sync job. Raises LipsyncError (one-line message) on bad input; writes nothing then.

    `progress(done, total)` follows the generated frames; `detect_progress` the face-detection pass
    (skipped on a presenter-cache hit). Setting `cancel` stops the job with `Cancelled`.
    """
    opts = options or GenerateOptions()
    _validate(opts)
    pin_large_allocations_to_mmap()
    started = time.monotonic()
    timer = StageTimer()
    selector = FaceSelector.parse(opts.face_select)
    transform = FrameTransform(opts.resize_factor, tuple(opts.crop), opts.rotate)
    source = FrameSource(face, transform, static=opts.static, fps=opts.fps)
    with timer.stage("mel"):
        mel = melspectrogram(load_audio(audio))
        starts = mel_window_starts(mel.shape[1], source.fps)
    n_frames = len(starts)

    pool = TritonPool(urls, cancel=cancel)
    models = pool.check_ready((WAV2LIP_MODEL,) if opts.box else (WAV2LIP_MODEL, DETECTOR_MODEL))
    max_batch = models[WAV2LIP_MODEL].max_batch_size
    batch_size = min(opts.wav2lip_batch_size, max_batch) if max_batch else opts.wav2lip_batch_size

    if opts.box:
        top, bottom, left, right = opts.box
        boxes = np.array([[left, top, right, bottom]], np.int32)
        cache_hit, filled, det_requests = False, 0, 0
        if not (0 <= left < right <= source.width and 0 <= top < bottom <= source.height):
            raise LipsyncError(f"--box {opts.box} lies outside the {source.width}x{source.height} frame")
    else:
        det_dims = models[DETECTOR_MODEL].input_dims["image"]
        cache = PresenterCache(opts.cache_dir) if opts.use_cache else None
        cache_options = {"pads": list(opts.pads), "transform": [opts.resize_factor, list(opts.crop), opts.rotate],
                         "static": opts.static, "nosmooth": opts.nosmooth, "select": selector.key(), "detector": det_dims}
        det_max = models[DETECTOR_MODEL].max_batch_size or opts.face_det_batch_size
        tracked = track_faces(source, pool, (det_dims[0], det_dims[1]), pads=opts.pads, selector=selector,
                              nosmooth=opts.nosmooth, batch_size=min(opts.face_det_batch_size, det_max), in_flight=opts.in_flight,
                              cache=cache, cache_options=cache_options, timer=timer, progress=detect_progress)
        boxes, cache_hit, filled, det_requests = tracked.boxes, tracked.cache_hit, tracked.filled, tracked.detector_requests

    writer = Mp4Writer(outfile, source.width, source.height, source.fps, audio, crf=opts.crf, preset=opts.preset)
    done = 0
    wav_requests = 0
    try:
        pending: deque = deque()

        def finish(item) -> None:
            nonlocal done
            future, frames, frame_boxes = item
            with timer.stage("generate"):
                generated = future.result()["face_out"]
            for frame, box, face_out in zip(frames, frame_boxes, generated):
                with timer.stage("paste"):
                    paste_face(frame, box, face_out, blend=opts.blend)
                with timer.stage("encode"):
                    writer.write(frame)
            done += len(frames)
            if progress:
                progress(done, n_frames)

        with ThreadPoolExecutor(max_workers=opts.in_flight, thread_name_prefix="wav2lip") as executor:
            frames, frame_boxes, crops, mels = [], [], [], []
            frame_index = 0
            # When a frame is decoded at most in_flight*batch - 1 earlier frames are still waiting to
            # be pasted and encoded (finish() drains to in_flight - 1 batches after each submit), so a
            # ring one larger never overwrites a frame in use.
            ring = opts.in_flight * batch_size + 1
            for src_index, frame in timer.timed_iter("decode", source.looped(n_frames, ring=ring)):
                if pool.cancel.is_set():
                    raise Cancelled("job cancelled")
                box = boxes[src_index % len(boxes)]  # one row for --box or a still image
                with timer.stage("paste"):
                    crops.append(crop_face(frame, box))
                start = starts[frame_index]
                mels.append(mel[:, start:start + MEL_WINDOW])
                frames.append(frame)
                frame_boxes.append(box)
                frame_index += 1
                if len(frames) == batch_size or frame_index == n_frames:
                    inputs = {"mel": np.stack(mels), "face": np.stack(crops)}
                    pending.append((executor.submit(pool.infer, WAV2LIP_MODEL, inputs, ["face_out"]), frames, frame_boxes))
                    wav_requests += 1
                    frames, frame_boxes, crops, mels = [], [], [], []
                    while len(pending) >= opts.in_flight:
                        finish(pending.popleft())
            while pending:
                finish(pending.popleft())
        if done != n_frames:
            raise LipsyncError(f"{face} produced {done} of {n_frames} frames; the video may be truncated")
        with timer.stage("encode"):
            writer.close()
    except BaseException:
        pool.cancel.set()
        writer.abort()
        raise
    seconds = time.monotonic() - started
    result = GenerateResult(
        outfile=str(outfile), frames=n_frames, fps=source.fps, width=source.width, height=source.height,
        seconds=round(seconds, 3), frames_per_second=round(n_frames / seconds, 3), cache_hit=cache_hit,
        frames_without_face=filled, detector_requests=det_requests, wav2lip_requests=wav_requests, stages=timer.as_dict(),
    )
    log.event("generated", outfile=str(outfile), frames=n_frames, fps_out=source.fps, seconds=result.seconds,
              frames_per_s=result.frames_per_second, cache_hit=cache_hit, frames_without_face=filled)
    return result


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
        unknown = set(options) - set(GenerateOptions.__dataclass_fields__)
        if unknown:
            raise LipsyncError(f"unknown option(s) {', '.join(sorted(unknown))}; see GenerateOptions")
        if self.cache_dir is not None:
            options.setdefault("cache_dir", self.cache_dir)
        return generate(face, audio, outfile, self.urls, GenerateOptions(**options), progress=progress, cancel=cancel,
                        detect_progress=detect_progress)
