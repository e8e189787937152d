"""Speech track -> 16 kHz mono float32, decoded in bounded chunks.

Mono is the MEAN of the channels, as librosa.load (and so Wav2Lip's training and reference) does;
ffmpeg's own `-ac 1` downmix is 3 dB louder (1.414x the mean for stereo) and would shift every mel
value. ffmpeg keeps the source channels and resamples; the channels are averaged here.

Uncompressed and lossless files (WAV, FLAC, AIFF: what TTS engines write) are read in-process
with libsndfile and resampled by the soxr library at the quality ffmpeg's `aresample=soxr` uses:
the same samples (bit for bit for mono, to float rounding for the channel mean; tested) without
the ~150 ms of starting ffprobe and ffmpeg at the head of every job. Everything else (mp3, m4a,
the audio of a video) goes through ffmpeg.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile
import soxr

from lipsync_triton.errors import LipsyncError
from .ffmpeg_pipe import FfmpegProcess
from .media_input import MediaLimits, input_args
from .media_probe import MediaInfo, check_length, probe_media
from .mel import HOP, SAMPLE_RATE, mel_from_chunks

CHUNK_SECONDS = 10.0


def _checked_audio(path: str | Path) -> MediaInfo:
    info = probe_media(path)
    if not info.has_audio:
        raise LipsyncError(f"{path} has no audio stream; pass a speech file (wav, mp3, m4a) or a video with sound")
    return info


def audio_chunks(path: str | Path, chunk_seconds: float = CHUNK_SECONDS) -> Iterator[np.ndarray]:
    """Any file ffmpeg reads (wav, mp3, m4a, the audio of an mp4) -> float32 mono 16 kHz chunks in [-1, 1]."""
    return _decoded(path, chunk_seconds)[0]


def _decoded(path: str | Path, chunk_seconds: float, limits: MediaLimits = MediaLimits()) -> tuple[Iterator[np.ndarray], float]:
    """The track's chunks, in-process when libsndfile reads it exactly, else through ffmpeg; and its
    expected duration in seconds (to size the mel). A length limit is checked against the stated
    (or measured) length first and enforced again while decoding: headers can lie."""
    pcm = _in_process_info(path)
    if pcm is not None:
        limits.check_seconds(str(path), pcm.duration)
        return _bounded(_in_process_chunks(path, chunk_seconds), path, limits), pcm.duration
    info = _checked_audio(path)
    check_length(info, limits, str(path))
    return _bounded(_ffmpeg_chunks(path, chunk_seconds, info), path, limits), info.audio_duration or info.duration


def _bounded(chunks: Iterator[np.ndarray], path: str | Path, limits: MediaLimits) -> Iterator[np.ndarray]:
    if limits.max_seconds is None:
        yield from chunks
        return
    total = 0
    for chunk in chunks:
        total += len(chunk)
        limits.check_seconds(str(path), total / SAMPLE_RATE - 1.0)  # a second of slack for rounding
        yield chunk


def _ffmpeg_chunks(path: str | Path, chunk_seconds: float, info: MediaInfo) -> Iterator[np.ndarray]:
    channels = max(1, info.audio_channels)
    args = [*input_args(path), "-map", "0:a:0", "-vn", "-ac", str(channels), "-ar", str(SAMPLE_RATE),
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


# libsndfile containers and sample codings whose samples are exactly what ffmpeg decodes (plain
# PCM and float, FLAC's lossless PCM): no codec with a decoder of its own (ADPCM, GSM, mp3...).
IN_PROCESS_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "FLAC", "CAF"})
IN_PROCESS_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})


def _in_process_info(path: str | Path):
    """soundfile's info when the file is one libsndfile reads exactly and it holds samples, else None."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    exact = info.format in IN_PROCESS_FORMATS and info.subtype in IN_PROCESS_SUBTYPES
    return info if exact and info.frames > 0 and info.channels > 0 else None


def _in_process_chunks(path: str | Path, chunk_seconds: float) -> Iterator[np.ndarray]:
    with soundfile.SoundFile(str(path)) as reader:
        resampler = soxr.ResampleStream(reader.samplerate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        block = max(1, int(chunk_seconds * reader.samplerate))
        while True:
            samples = reader.read(block, dtype="float32", always_2d=True)
            last = len(samples) < block
            mono = resampler.resample_chunk(samples.mean(axis=1, dtype=np.float32), last=last)
            if len(mono):
                yield mono
            if last:
                return


def load_audio(path: str | Path) -> np.ndarray:
    """The whole track at once (tests, benchmarks); the lip-sync job streams with `load_mel`."""
    chunks = list(audio_chunks(path))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def load_mel(path: str | Path, limits: MediaLimits = MediaLimits()) -> np.ndarray:
    """The speech file's Wav2Lip mel [80, T], decoded and computed in bounded chunks."""
    chunks, seconds = _decoded(path, CHUNK_SECONDS, limits)
    return mel_from_chunks(chunks, seconds)
