"""Speech track -> 16 kHz mono float32, decoded by ffmpeg in bounded chunks.

Mono is the MEAN of the channels, as librosa.load (and so Wav2Lip's training and reference) does;
ffmpeg's own `-ac 1` downmix is 3 dB louder (1.414x the mean for stereo) and would shift every mel
value. ffmpeg keeps the source channels and resamples; the channels are averaged here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from lipsync_triton.errors import LipsyncError
from .ffmpeg_pipe import FfmpegProcess
from .media_probe import MediaInfo, probe_media
from .mel import HOP, SAMPLE_RATE, mel_from_chunks

CHUNK_SECONDS = 10.0


def _checked_audio(path: str | Path) -> MediaInfo:
    info = probe_media(path)
    if not info.has_audio:
        raise LipsyncError(f"{path} has no audio stream; pass a speech file (wav, mp3, m4a) or a video with sound")
    return info


def audio_chunks(path: str | Path, chunk_seconds: float = CHUNK_SECONDS, info: MediaInfo | None = None) -> Iterator[np.ndarray]:
    """Any file ffmpeg reads (wav, mp3, m4a, the audio of an mp4) -> float32 mono 16 kHz chunks in [-1, 1]."""
    info = info or _checked_audio(path)
    channels = max(1, info.audio_channels)
    args = ["-i", str(path), "-map", "0:a:0", "-vn", "-ac", str(channels), "-ar", str(SAMPLE_RATE),
            "-af", "aresample=resampler=soxr", "-f", "f32le", "-"]
    chunk_bytes = int(chunk_seconds * SAMPLE_RATE) * channels * 4
    total = 0
    with FfmpegProcess(args, read=True) as reader:
        while True:
            data = reader.read(chunk_bytes)
            if not data:
                break
            samples = np.frombuffer(data, np.float32)
            mono = samples if channels == 1 else samples[: len(samples) - len(samples) % channels].reshape(-1, channels).mean(axis=1)
            total += len(mono)
            yield mono
        if reader.finish() != 0:
            raise LipsyncError(f"cannot decode audio from {path}: {reader.reason()}")
    if total < HOP:
        raise LipsyncError(f"{path} has no audio samples (zero length); pass a non-empty speech track")


def load_audio(path: str | Path) -> np.ndarray:
    """The whole track at once (tests, benchmarks); the lip-sync job streams with `load_mel`."""
    chunks = list(audio_chunks(path))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def load_mel(path: str | Path) -> np.ndarray:
    """The speech file's Wav2Lip mel [80, T], decoded and computed in bounded chunks."""
    info = _checked_audio(path)
    return mel_from_chunks(audio_chunks(path, info=info), info.audio_duration or info.duration)
