"""16 kHz mono speech -> the log-mel spectrogram Wav2Lip was trained on -> one window per video frame.

The mel is computed in a stream (`MelStream`): the pre-emphasis filter carries its state across
chunks and each STFT frame is computed once its 800 samples have arrived, so a 30-minute lecture
never holds more than one chunk of samples and its float64 STFT at a time, and the result equals
the one-shot computation (reflect padding is applied at the true start and end only).
"""
from __future__ import annotations

import math

from collections.abc import Sequence
from typing import Iterable

import numpy as np
from scipy.signal import lfilter

from lipsync_triton.errors import LipsyncError
from lipsync_triton.model_contract import MEL_STEPS, N_MELS  # the model's mel input: 80 bands x 16 steps

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS = 4.0
MEL_FRAMES_PER_SECOND = SAMPLE_RATE / HOP  # 80
MEL_WINDOW = MEL_STEPS  # 0.2 s of audio per video frame
_HALF = N_FFT // 2

_NAN_ADVICE = ("the audio's mel spectrogram contains NaN (a silent or synthetic track with invalid samples); "
               "re-encode it with a tiny noise floor, e.g. ffmpeg -i in.wav -af 'volume=1,aeval=val(0)+1e-5*random(0)' out.wav")


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory scale: linear below 1 kHz, logarithmic above (librosa's htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), hz * 3.0 / 200.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * 200.0 / 3.0)


def slaney_mel_filters() -> np.ndarray:
    """[80, 401] triangular filters, Slaney scale and area normalisation (librosa.filters.mel defaults)."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


_MEL_BASIS = slaney_mel_filters()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)).astype(np.float64)  # periodic Hann


def _normalised_mel(padded: np.ndarray, n_frames: int) -> np.ndarray:
    """Mel columns of the first n_frames STFT frames of an already padded, pre-emphasised signal."""
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    magnitude = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)).T
    db = 20.0 * np.log10(np.maximum(1e-5, _MEL_BASIS @ magnitude)) - REF_LEVEL_DB
    normalised = np.clip(2 * MAX_ABS * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS, -MAX_ABS, MAX_ABS)
    if np.isnan(normalised).any():
        raise LipsyncError(_NAN_ADVICE)
    return normalised.astype(np.float32)


class MelStream:
    """Feed waveform chunks with `push`, then `finish`; each returns the mel columns completed so far.

    Pre-emphasis 0.97, STFT (n_fft 800, hop 200, Hann 800, centred, REFLECT padding as librosa 0.7
    did), Slaney mel 80 bands 55-7600 Hz, 20*log10(max(1e-5, mel)) - 20 dB, then
    clip(8 * (S + 100) / 100 - 4, -4, 4). 80 mel frames per second of audio.
    """

    def __init__(self):
        self._zi = np.zeros(1)
        self._buffer = np.zeros(0)  # pre-emphasised samples not yet consumed (with the start padding)
        self._started = False
        self.samples = 0

    def push(self, wav: np.ndarray) -> np.ndarray:
        wav = np.asarray(wav)
        if wav.ndim != 1:
            raise LipsyncError(f"the mel expects a 1-D mono waveform, got shape {wav.shape}")
        if not np.isfinite(wav).all():
            raise LipsyncError(_NAN_ADVICE)
        emphasized, self._zi = lfilter([1.0, -PREEMPHASIS], [1.0], wav.astype(np.float64), zi=self._zi)
        self.samples += len(emphasized)
        self._buffer = np.concatenate([self._buffer, emphasized])
        if not self._started:
            if len(self._buffer) <= _HALF:  # the reflect padding needs 401 samples
                return np.zeros((N_MELS, 0), np.float32)
            self._buffer = np.concatenate([self._buffer[1:_HALF + 1][::-1], self._buffer])
            self._started = True
        return self._emit()

    def finish(self) -> np.ndarray:
        if not self._started:
            raise LipsyncError(f"audio too short: {self.samples} samples; pass at least 0.2 s of speech")
        self._buffer = np.concatenate([self._buffer, self._buffer[-_HALF - 1:-1][::-1]])
        return self._emit()

    def _emit(self) -> np.ndarray:
        n = 0 if len(self._buffer) < N_FFT else 1 + (len(self._buffer) - N_FFT) // HOP
        if n == 0:
            return np.zeros((N_MELS, 0), np.float32)
        mel = _normalised_mel(self._buffer[:(n - 1) * HOP + N_FFT], n)
        self._buffer = self._buffer[n * HOP:].copy()
        return mel


def mel_from_chunks(chunks: Iterable[np.ndarray], expected_seconds: float = 0.0) -> np.ndarray:
    """Stream waveform chunks into one [80, T] mel. The array is sized from `expected_seconds` (the
    probed duration) and grown only if the audio runs longer, so no second copy is ever made."""
    stream = MelStream()
    out = np.empty((N_MELS, int(expected_seconds * MEL_FRAMES_PER_SECOND) + 2 * int(MEL_FRAMES_PER_SECOND)), np.float32)
    filled = 0

    def append(columns: np.ndarray) -> None:
        nonlocal out, filled
        if filled + columns.shape[1] > out.shape[1]:
            out = np.concatenate([out[:, :filled], np.empty((N_MELS, max(columns.shape[1], filled // 2)), np.float32)], axis=1)
        out[:, filled:filled + columns.shape[1]] = columns
        filled += columns.shape[1]

    for chunk in chunks:
        append(stream.push(chunk))
    append(stream.finish())
    return out[:, :filled]


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """16 kHz mono float waveform -> normalised log-mel [80, T], exactly as Wav2Lip was trained."""
    return mel_from_chunks([np.asarray(wav)], len(wav) / SAMPLE_RATE)


class MelWindowStarts(Sequence[int]):
    """Start index of each video frame's 16-frame mel window; its length is the number of output frames.

    Frame i starts at int(i * 80 / fps); the first window that would run past the end is replaced
    by the LAST 16 mel frames and ends the sequence (the reference's rule). Computed per index, so
    its memory does not depend on the number of frames (a lying frame rate cannot grow it).
    """

    def __init__(self, n_mel_frames: int, fps: float):
        if fps <= 0:
            raise LipsyncError(f"fps must be positive, got {fps}")
        if n_mel_frames < MEL_WINDOW:
            raise LipsyncError(f"audio too short: {n_mel_frames} mel frames, need at least {MEL_WINDOW} (0.2 s)")
        self.n_mel_frames, self.fps = n_mel_frames, fps
        last = n_mel_frames - MEL_WINDOW  # the highest start that still fits
        full = int((last + 1) * fps / MEL_FRAMES_PER_SECOND)  # an estimate of how many frames start <= last ...
        while full > 0 and self._start(full - 1) > last:
            full -= 1
        while self._start(full) <= last:  # ... made exact with the same expression as the frames use
            full += 1
        self._full = full  # frames 0..full-1 fit; one more frame takes the last window
        self._length = full + 1

    def _start(self, i: int) -> int:
        return int(i * MEL_FRAMES_PER_SECOND / self.fps)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._length))]
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(i)
        return self._start(i) if i < self._full else self.n_mel_frames - MEL_WINDOW

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


def frames_covering_speech(n_mel_frames: int, fps: float) -> int:
    """Video frames that last as long as the speech (whose length the mel gives to within one hop:
    n_mel_frames = 1 + samples // hop). The reference's frames (MelWindowStarts) stop about 0.15 s
    early, where the last full 16-step window starts; the job holds its last frame for the rest."""
    seconds = (n_mel_frames - 1) / MEL_FRAMES_PER_SECOND
    return math.ceil(seconds * fps - 1e-6)


def mel_window_starts(n_mel_frames: int, fps: float) -> MelWindowStarts:
    return MelWindowStarts(n_mel_frames, fps)


def mel_windows(mel: np.ndarray, fps: float) -> tuple[np.ndarray, int]:
    """The [80,16] window of every output frame, stacked: ([N,80,16], N). (The lip-sync job slices
    windows per batch instead, so its memory does not grow with the audio's length.)"""
    starts = mel_window_starts(mel.shape[1], fps)
    return np.stack([mel[:, s:s + MEL_WINDOW] for s in starts]), len(starts)
