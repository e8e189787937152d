"""Live lip-sync: a presenter that speaks while speech arrives, frame by frame, through the same
Triton models as the batch jobs.

`LivePresenter` is everything that does not depend on the speech, computed once per session: the
presenter's first seconds decoded (I420), its face boxes (tracked through Triton, or from the
presenter cache) and their 96x96 crops. `LiveSession` turns pushed PCM16 (16 kHz mono, any chunk
size, faster than real time is queued) into one `LiveFrame` per video slot (40 ms at 25 fps):

    slot j's 640 samples -> voice activity (energy) -> the streaming mel (preprocessing.mel.MelStream)
    -> as soon as a frame's 16-step mel window is complete: Wav2Lip on Triton (asynchronous, high
       request priority, batches of 1-4) -> at its output slot: paste-back with a short cross-fade.

Wav2Lip's window reaches about 0.2 s past a frame's start, so a frame is produced LOOKAHEAD slots
after its audio entered: every frame and its own audio leave together (one clock: the slot count),
delayed by LOOKAHEAD / fps. Silence is not sent to Triton: the presenter idles on its own frames,
played forwards then backwards (no jump at the seam). `interrupt()` drops queued speech and what
is in flight: the next frame is the presenter's own.

A CPU that cannot run Wav2Lip 25 times a second (2 AVX2 cores manage 9-14) must not make the
whole stream late: at most `max_in_flight` requests run at once (a speaking slot that finds them
busy gets no request of its own), and `next_frame(deadline=...)` waits for a mouth only until the
slot is due. A speaking slot without its mouth holds the last one (counted in `frames_held`), so
the video stays in real time and aligned with its audio, and the lips update as often as the
machine allows. Mouths that keep missing their slots (3 within two look-aheads; one hiccup does
not count) deepen the look-ahead by one slot, up to `max_extra_delay_s`: Wav2Lip gets that much
longer per request, and the output delay settles where the machine keeps up (the slots taken in
for it are silence when no speech is queued, so the step is not seen). Past that, only every
`stride`-th speaking slot (up to MAX_STRIDE) gets a mouth of its own: no request is made that
would come too late, and the lips move at 25 / stride mouths a second.

Voice activity is a per-slot energy gate (RMS above `vad_db`, default -45 dBFS, with a short hang
time): TTS output and close microphones have clean silence between phrases, the gate costs
microseconds per slot, and a mouth that moves on a breath costs nothing worse than a soft blend.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync_triton import log
from lipsync_triton.errors import LipsyncError
from lipsync_triton.preprocessing.crops import crop_face_i420, paste_face_i420
from lipsync_triton.preprocessing.faces import FaceSelector
from lipsync_triton.preprocessing.mel import HOP, MEL_FRAMES_PER_SECOND, MEL_WINDOW, N_MELS, SAMPLE_RATE, MelStream
from lipsync_triton.preprocessing.video import FrameSource, FrameTransform
from .generate import track_boxes
from .in_flight import JobCancel
from .options import GenerateOptions
from .stage_timer import StageTimer
from lipsync_triton.model_contract import models_needed
from .model_io import wav2lip_faces, wav2lip_request
from .triton_client import TritonPool

LIVE_PRIORITY = 1  # Triton's highest request priority: batch jobs (default level) never starve live frames
# Slots between a frame's audio entering and the frame leaving: its mel window must be complete
# (16 mel steps + the STFT's half window: ~0.225 s at 25 fps = 6 slots) before Wav2Lip can run.
LOOKAHEAD_S = (MEL_WINDOW * HOP + 400) / SAMPLE_RATE
FADE_SLOTS = 3  # idle <-> speaking cross-fade, in frames
MAX_STRIDE = 3  # at worst every third speaking slot gets its own mouth (8 a second at 25 fps)
MISSES_TO_DEEPEN = 3  # mouths missing their slots within two look-aheads before the look-ahead deepens
HANG_SLOTS = 4  # a speaking gate stays open this many slots after the energy drops (no flicker between words)


def is_loud(samples: np.ndarray, threshold: float) -> bool:
    """The voice-activity gate: RMS of int16 samples above `threshold` (in int16 units)."""
    return len(samples) > 0 and float(np.sqrt(np.mean(samples.astype(np.float32) ** 2))) > threshold


def pcm16(wav: np.ndarray) -> np.ndarray:
    """A float waveform (-1..1) as the PCM16 samples a session takes."""
    return (np.clip(wav, -1, 1) * 32767).astype("<i2")


@dataclass
class LiveFrame:
    index: int  # the slot number: its time is index / fps
    image: np.ndarray  # I420, (H * 3 / 2, W) uint8
    audio: np.ndarray  # int16 samples of this slot (SAMPLE_RATE / fps of them)
    speaking: bool  # the gate was open for this slot's audio
    generated: float  # 0 = the presenter's own pixels, 1 = Wav2Lip's mouth, between: cross-fading


class LivePresenter:
    """A presenter prepared for live use: frames, boxes and crops of its first `max_seconds`."""

    def __init__(self, frames: list[np.ndarray], boxes: np.ndarray, fps: float):
        if not frames:
            raise LipsyncError("the presenter has no frames")
        self.frames, self.boxes, self.fps = frames, boxes, fps
        self.crops = [crop_face_i420(f, b) for f, b in zip(frames, boxes)]

    @classmethod
    def load(cls, face: str | Path, pool: TritonPool, options: GenerateOptions | None = None, max_seconds: float = 4.0,
             fps: float = 25.0, max_pixels: int | None = None, budget_bytes: int | None = None) -> "LivePresenter":
        """The presenter's first `max_seconds`, decoded at most `max_pixels` large (a larger one is
        scaled down by a whole factor, as --resize-factor does) and refused with one line, before a
        frame is decoded, when its frames would take more than `budget_bytes`."""
        opts = options or GenerateOptions()
        transform = FrameTransform(opts.resize_factor, tuple(opts.crop), opts.rotate)
        source = FrameSource(face, transform, fps=fps, pix_fmt="yuv420p", limits=opts.limits)
        factor = opts.resize_factor
        while max_pixels and (source.info.width // factor) * (source.info.height // factor) > max_pixels:
            factor += 1
        if factor != opts.resize_factor:
            transform = FrameTransform(factor, tuple(opts.crop), opts.rotate)
            source = FrameSource(face, transform, fps=fps, pix_fmt="yuv420p", limits=opts.limits)
        count = 1 if source.still else max(1, int(max_seconds * source.fps))
        needed = count * source.width * source.height * 3 // 2
        if budget_bytes is not None and needed > budget_bytes:
            raise LipsyncError(f"this presenter's {count} frames at {source.width}x{source.height} would take "
                               f"{needed / 2**20:.0f} MB; a live presenter may take {budget_bytes / 2**20:.0f} MB "
                               "(LIPSYNC_LIVE_PRESENTER_MB): use a shorter or lower frame-rate video, or a photo")
        frames = [f.copy() for f in source.frames(limit=count)]
        models = pool.check_ready(models_needed(fixed_box=False))
        tracked = track_boxes(opts, source, pool, models, len(frames), FaceSelector.parse(opts.face_select), transform,
                              JobCancel(None), StageTimer(), None)
        try:
            boxes = np.stack([tracked.boxes.box(i) for i in range(len(frames))])
            tracked.finish()
        except BaseException:
            tracked.abort()
            raise
        return cls(frames, boxes, source.fps if not source.still else fps)

    def pingpong(self, slot: int) -> int:
        """The presenter frame shown at `slot` when idle: forwards, then backwards (no seam)."""
        n = len(self.frames)
        if n == 1:
            return 0
        period = 2 * n - 2
        i = slot % period
        return i if i < n else period - i


class LiveSession:
    """Push speech in; pull one LiveFrame per slot (`next_frame`). Thread-safe between one pusher
    (push_pcm / interrupt) and one puller; `close()` releases the Triton requests in flight."""

    def __init__(self, presenter: LivePresenter, pool: TritonPool, fps: float = 25.0, vad_db: float = -45.0,
                 max_queued_s: float = 600.0, max_in_flight: int = 3, max_extra_delay_s: float = 0.6):
        self.presenter, self.pool, self.fps = presenter, pool, fps
        self.samples_per_slot = int(round(SAMPLE_RATE / fps))
        if self.samples_per_slot * fps != SAMPLE_RATE:
            raise LipsyncError(f"live fps must divide {SAMPLE_RATE} samples per second evenly (25, 20, 16...), got {fps}")
        self.lookahead = int(np.ceil(LOOKAHEAD_S * fps)) + 1
        self.extra_slots = 0  # look-ahead added after mouths missed their slots
        self.max_extra_slots = int(round(max_extra_delay_s * fps))
        self.stride = 1  # every stride-th speaking slot is sent to Wav2Lip
        self._misses: collections.deque[int] = collections.deque()  # recent slots whose mouth missed its slot
        self.vad_threshold = 32768.0 * 10 ** (vad_db / 20)
        self.max_queued = int(max_queued_s * SAMPLE_RATE)
        self._lock = threading.Lock()
        self._queued: collections.deque[np.ndarray] = collections.deque()  # pushed speech not yet in a slot
        self._queued_samples = 0
        self._intake = 0  # next slot whose audio enters
        self._out = 0  # next slot to leave
        self._slots: dict[int, tuple[np.ndarray, bool]] = {}  # slot -> (its audio, gate open)
        self._mel = MelStream()
        self._mel_cols: dict[int, np.ndarray] = {}
        self._mel_next = 0
        self._hang = 0
        self._fade = 0.0
        self._last_mouth: np.ndarray | None = None
        self._pending: dict[int, Future] = {}
        self.max_in_flight = max_in_flight
        self._requests = ThreadPoolExecutor(max_in_flight, thread_name_prefix="live-wav2lip")
        self._closed = False
        self.frames_generated = 0
        self.frames_held = 0  # speaking slots shown with the previous mouth (Wav2Lip busy or its answer late)
        self.triton_errors = 0

    # -- input ------------------------------------------------------------------------------------

    def push_pcm(self, pcm: bytes | np.ndarray) -> None:
        """PCM16 little-endian mono at 16 kHz, any number of whole samples."""
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            if len(pcm) % 2:
                raise LipsyncError("PCM16 holds whole 2-byte samples: send an even number of bytes")
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        else:
            samples = np.asarray(pcm)
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise LipsyncError("push 1-D int16 samples (PCM16 mono, 16 kHz)")
        with self._lock:
            if self._queued_samples + len(samples) > self.max_queued:
                raise LipsyncError(f"more than {self.max_queued / SAMPLE_RATE:.0f} s of speech queued; push at most real time")
            if len(samples):
                self._queued.append(samples.copy())
                self._queued_samples += len(samples)

    def interrupt(self) -> None:
        """Barge-in: drop the queued speech and what is in flight; the next frame is the presenter's own."""
        with self._lock:
            self._queued.clear()
            self._queued_samples = 0
            for slot, (audio, _) in list(self._slots.items()):
                self._slots[slot] = (np.zeros_like(audio), False)
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._hang, self._fade, self._last_mouth = 0, 0.0, None

    def speaking_slots_ahead(self) -> int:
        """Slots already taken in whose gate is open (speech between intake and output)."""
        with self._lock:
            return sum(1 for _, speaking in self._slots.values() if speaking)

    @property
    def queued_seconds(self) -> float:
        with self._lock:
            return self._queued_samples / SAMPLE_RATE

    # -- output -----------------------------------------------------------------------------------

    def next_frame(self, deadline: float | None = None) -> LiveFrame:
        """The next slot's frame and audio. Blocks only while its Wav2Lip request is in flight, and
        with a `deadline` (time.monotonic()) no longer than until then: a late mouth is dropped."""
        if self._closed:
            raise LipsyncError("the live session is closed")
        with self._lock:
            while self._intake <= self._out + self.lookahead + self.extra_slots:
                self._take_slot()
            slot = self._out
            self._out += 1
            audio, speaking = self._slots.pop(slot)
            future = self._pending.pop(slot, None)
            for old in [c for c in self._mel_cols if c < self._mel_start(slot)]:
                del self._mel_cols[old]
        generated = None
        if future is not None:
            try:
                generated = future.result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except FutureTimeout:  # the slot is due: show it now with the last mouth; the answer is not waited for
                future.cancel()
                self._deepen(slot)
            except Exception as exc:  # Triton down or restarting: idle on the presenter, try again next slot
                self.triton_errors += 1
                if self.triton_errors in (1, 10, 100) or self.triton_errors % 1000 == 0:
                    log.event("live_triton_error", errors=self.triton_errors, error=str(exc).splitlines()[0][:200])
        # Cross-fade over FADE_SLOTS frames into speech and out of it (out of it with the last mouth).
        step = 1.0 / FADE_SLOTS
        if generated is not None:
            self._fade, self._last_mouth = min(1.0, self._fade + step), generated
            self.frames_generated += 1
        elif speaking and self._last_mouth is not None and self._fade > 0:
            self.frames_held += 1  # mid-speech without a mouth of its own: hold the last one
        else:
            self._fade = max(0.0, self._fade - step)
        index = self.presenter.pingpong(slot)
        image = self.presenter.frames[index]
        if self._fade > 0 and self._last_mouth is not None:
            mouth = image.copy()
            paste_face_i420(mouth, self.presenter.boxes[index], self._last_mouth)
            image = mouth if self._fade >= 1.0 else (image * (1 - self._fade) + mouth * self._fade + 0.5).astype(np.uint8)
        else:
            image = image.copy()
        return LiveFrame(slot, image, audio, speaking, self._fade)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._queued.clear()
            self._slots.clear()
            self._mel_cols.clear()
        self._requests.shutdown(wait=False, cancel_futures=True)

    # -- internals (under the lock) -----------------------------------------------------------------

    def _take_slot(self) -> None:
        """Move one slot of queued speech (or silence) into the timeline; start every Wav2Lip request
        whose mel window just completed."""
        n = self.samples_per_slot
        parts, need = [], n
        while need and self._queued:
            head = self._queued[0]
            take = head[:need]
            parts.append(take)
            need -= len(take)
            if len(take) == len(head):
                self._queued.popleft()
            else:
                self._queued[0] = head[len(take):]
        got = n - need
        self._queued_samples -= got
        audio = np.concatenate(parts + [np.zeros(need, np.int16)]) if parts else np.zeros(n, np.int16)
        loud = got > 0 and is_loud(audio, self.vad_threshold)
        self._hang = HANG_SLOTS if loud else max(0, self._hang - 1)
        slot = self._intake
        self._intake += 1
        self._slots[slot] = (audio, loud or self._hang > 0)
        columns = self._mel.push(audio.astype(np.float32) / 32768.0)
        for i in range(columns.shape[1]):
            self._mel_cols[self._mel_next + i] = columns[:, i]
        self._mel_next += columns.shape[1]
        # every slot whose window is now complete and whose audio is speech goes to Triton, while
        # fewer than max_in_flight requests run (a slot skipped now is tried again at the next slot)
        for s in range(max(self._out, slot - self.lookahead - self.extra_slots), slot + 1):
            start = self._mel_start(s)
            if s in self._pending or s not in self._slots or not self._slots[s][1] or start + MEL_WINDOW > self._mel_next:
                continue
            if s % self.stride:
                continue  # shown with the mouth before it
            if sum(not f.done() for f in self._pending.values()) >= self.max_in_flight:
                break
            mel = np.stack([self._mel_cols[c] for c in range(start, start + MEL_WINDOW)], axis=1)
            face = self.presenter.crops[self.presenter.pingpong(s)]
            self._pending[s] = self._requests.submit(self._infer, mel, face)

    def calibrate(self) -> float:
        """One Wav2Lip request now (a silent window, the presenter's first crop), timed: the starting
        look-ahead gives a request twice that, so a slow machine's first mouths are not all late
        (and the model path is warm). Returns the seconds it took (0 if Triton did not answer)."""
        start = time.monotonic()
        try:
            self._infer(np.zeros((N_MELS, MEL_WINDOW), np.float32), self.presenter.crops[0])
        except Exception as exc:  # Triton down: start at the plain look-ahead; misses deepen it later
            log.event("live_calibration_failed", error=str(exc).splitlines()[0][:200])
            return 0.0
        took = time.monotonic() - start
        budget = self.lookahead - LOOKAHEAD_S * self.fps  # slots a request has without extra look-ahead
        self.extra_slots = min(self.max_extra_slots, max(0, math.ceil(2 * took * self.fps - budget)))
        return took

    def _deepen(self, slot: int) -> None:
        """A mouth missed its slot: with MISSES_TO_DEEPEN of them within two look-aheads, one slot more
        look-ahead (up to max_extra_slots), then a longer stride (up to MAX_STRIDE); the count starts
        again, as a step shows only a look-ahead later."""
        self._misses.append(slot)
        while self._misses and self._misses[0] < slot - 2 * self.lookahead:
            self._misses.popleft()
        if len(self._misses) < MISSES_TO_DEEPEN:
            return
        self._misses.clear()
        if self.extra_slots < self.max_extra_slots:
            self.extra_slots += 1
        elif self.stride < MAX_STRIDE:
            self.stride += 1
        else:
            return
        log.event("live_lookahead_deepened", delay_ms=round(1000 * self.delay_slots / self.fps), stride=self.stride)

    @property
    def delay_slots(self) -> int:
        """Slots from a sample entering to its frame leaving (the output delay)."""
        return self.lookahead + self.extra_slots

    def _mel_start(self, slot: int) -> int:
        return int(slot * MEL_FRAMES_PER_SECOND / self.fps)

    def _infer(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        out = self.pool.infer(*wav2lip_request(mel[None], face[None]))
        return wav2lip_faces(out)[0]
