"""Speech track -> 16 kHz mono -> the log-mel spectrogram Wav2Lip was trained on -> per-frame windows."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from lipsync_triton.errors import LipsyncError
from .media_probe import probe_media

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS = 4.0
MEL_FRAMES_PER_SECOND = SAMPLE_RATE / HOP  # 80
MEL_WINDOW = 16  # 0.2 s of audio per video frame

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


def stft_magnitude(y: np.ndarray) -> np.ndarray:
    """|STFT| [401, T]: centred frames with REFLECT padding of n_fft/2 (librosa 0.7's default)."""
    padded = np.pad(y.astype(np.float64), N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    return np.abs(np.fft.rfft(frames * _WINDOW, axis=1)).T


def load_audio(path: str | Path) -> np.ndarray:
    """Any file ffmpeg reads (wav, mp3, m4a, the audio of an mp4) -> float32 mono 16 kHz in [-1, 1]."""
    info = probe_media(path)
    if not info.has_audio:
        raise LipsyncError(f"{path} has no audio stream; pass a speech file (wav, mp3, m4a) or a video with sound")
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn",
         "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"],
        capture_output=True,
    )
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown ffmpeg error"]
        raise LipsyncError(f"cannot decode audio from {path}: {reason[0][:200]}")
    wav = np.frombuffer(proc.stdout, dtype=np.float32)
    if wav.size < HOP:
        raise LipsyncError(f"{path} has no audio samples (zero length); pass a non-empty speech track")
    return wav


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """16 kHz mono float waveform -> normalised log-mel [80, T], exactly as Wav2Lip was trained.

    Pre-emphasis 0.97, STFT (n_fft 800, hop 200, Hann 800, centred, REFLECT padding as librosa 0.7
    did), Slaney mel 80 bands 55-7600 Hz, 20*log10(max(1e-5, mel)) - 20 dB, then
    clip(8 * (S + 100) / 100 - 4, -4, 4). 80 mel frames per second of audio.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise LipsyncError(f"melspectrogram expects a 1-D mono waveform, got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise LipsyncError(_NAN_ADVICE)
    emphasized = lfilter([1.0, -PREEMPHASIS], [1.0], wav)
    if len(emphasized) <= N_FFT // 2:
        raise LipsyncError(f"audio too short: {len(emphasized)} samples; pass at least 0.2 s of speech")
    mel = _MEL_BASIS @ stft_magnitude(emphasized)
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    normalised = np.clip(2 * MAX_ABS * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS, -MAX_ABS, MAX_ABS)
    if np.isnan(normalised).any():
        raise LipsyncError(_NAN_ADVICE)
    return normalised.astype(np.float32)


def mel_window_starts(n_mel_frames: int, fps: float) -> list[int]:
    """Start index of each video frame's 16-frame mel window; the count is the number of output frames.

    Frame i starts at int(i * 80 / fps); the first window that would run past the end is replaced
    by the LAST 16 mel frames and ends the list (the reference's rule).
    """
    if fps <= 0:
        raise LipsyncError(f"fps must be positive, got {fps}")
    if n_mel_frames < MEL_WINDOW:
        raise LipsyncError(f"audio too short: {n_mel_frames} mel frames, need at least {MEL_WINDOW} (0.2 s)")
    starts = []
    i = 0
    while True:
        start = int(i * MEL_FRAMES_PER_SECOND / fps)
        if start + MEL_WINDOW > n_mel_frames:
            starts.append(n_mel_frames - MEL_WINDOW)
            return starts
        starts.append(start)
        i += 1


def mel_windows(mel: np.ndarray, fps: float) -> tuple[np.ndarray, int]:
    """The [80,16] window of every output frame, stacked: ([N,80,16], N). (The lip-sync job slices
    windows per batch instead, so its memory does not grow with the audio's length.)"""
    starts = mel_window_starts(mel.shape[1], fps)
    return np.stack([mel[:, s:s + MEL_WINDOW] for s in starts]), len(starts)
