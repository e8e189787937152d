"""Audio -> mel exactly as Wav2Lip expects, and mel windows aligned to video frames."""
import subprocess

import numpy as np
import pytest

from lipsync_triton.errors import LipsyncError
from lipsync_triton.preprocessing.audio import load_audio, mel_window_starts, mel_windows, melspectrogram


def _hz_to_mel_slaney(f):
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, lin)


def _mel_to_hz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), (200.0 / 3) * m)


def _reference_mel(wav):
    """Independent numpy implementation of the facts in wav2lip.md (no librosa, no scipy)."""
    x = wav.astype(np.float64)
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - 0.97 * x[:-1]
    padded = np.pad(y, 400, mode="reflect")
    n_frames = 1 + (len(padded) - 800) // 200
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)  # periodic Hann
    frames = np.stack([padded[i * 200:i * 200 + 800] * window for i in range(n_frames)])
    mag = np.abs(np.fft.rfft(frames, axis=1)).T  # [401, T]
    fft_freqs = np.linspace(0, 8000, 401)
    mel_points = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(55.0), _hz_to_mel_slaney(7600.0), 82))
    fdiff = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    weights = np.zeros((80, 401))
    for i in range(80):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:82] - mel_points[:80]))[:, None]  # Slaney area normalisation
    mel = weights @ mag
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_mel_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) + 0.02 * rng.normal(size=t.size)).astype(np.float32)
    mel = melspectrogram(wav)
    ref = _reference_mel(wav)
    assert mel.shape == (80, 161) == ref.shape  # 80 mel frames per second (+1 centred)
    assert np.abs(mel - ref).max() < 2e-3


def test_reflect_padding_is_used_not_constant():
    wav = np.linspace(0.5, -0.5, 4000).astype(np.float32)
    mel = melspectrogram(wav)
    assert np.abs(mel[:, 0] - _reference_mel(wav)[:, 0]).max() < 2e-3


def test_nan_mel_is_rejected_with_advice():
    wav = np.zeros(16000, np.float32)
    wav[100] = np.nan
    with pytest.raises(LipsyncError, match="NaN.*noise floor"):
        melspectrogram(wav)


@pytest.mark.parametrize("fps, n_mel, expected", [
    (25.0, 100, [0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 32, 35, 38, 41, 44, 48, 51, 54, 57, 60, 64, 67, 70, 73, 76, 80, 83, 84]),
    (29.97, 40, [0, 2, 5, 8, 10, 13, 16, 18, 21, 24, 24]),
])
def test_mel_windows_follow_the_reference_rule(fps, n_mel, expected):
    starts = mel_window_starts(n_mel, fps)
    assert starts == expected
    assert starts[-1] == n_mel - 16
    assert all(int(i * 80 / fps) == s for i, s in enumerate(starts[:-1]))


def test_mel_windows_shape():
    windows, n = mel_windows(np.zeros((80, 200), np.float32), 25.0)
    assert windows.shape == (n, 80, 16)


@pytest.mark.parametrize("ext, args", [
    ("mp3", ["-ar", "44100", "-ac", "2", "-c:a", "libmp3lame"]),
    ("m4a", ["-ar", "48000", "-ac", "2", "-c:a", "aac"]),
    ("wav", ["-ar", "8000", "-ac", "1"]),
])
def test_any_audio_format_becomes_16k_mono(tmp_path, ext, args):
    path = tmp_path / f"tone.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1.5", *args, str(path)], check=True)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and abs(len(wav) / 16000 - 1.5) < 0.1
    assert 0.05 < np.abs(wav).max() <= 1.0


def test_audio_of_a_video_is_used(media, tmp_path):
    video = tmp_path / "talk.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(media["clip"]), "-i", str(media["speech"]),
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(video)], check=True)
    assert len(load_audio(video)) > 16000


def test_audio_errors(media, tmp_path):
    with pytest.raises(LipsyncError, match="no audio stream"):
        load_audio(media["clip"])
    empty = tmp_path / "empty.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", str(empty)], check=True)
    with pytest.raises(LipsyncError):
        load_audio(empty)
    text = tmp_path / "speech.mp3"
    text.write_text("not audio")
    with pytest.raises(LipsyncError, match="not a readable media file"):
        load_audio(text)
