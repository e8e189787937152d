"""Audio -> mel exactly as Wav2Lip expects, and mel windows aligned to video frames."""
import subprocess

import numpy as np
import pytest

from lipsync_triton.errors import LipsyncError
from lipsync_triton.preprocessing.audio import load_audio
from lipsync_triton.preprocessing.mel import mel_window_starts, mel_windows, melspectrogram
from conftest import librosa_mel as _librosa_mel


def test_mel_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) + 0.02 * rng.normal(size=t.size)).astype(np.float32)
    mel = melspectrogram(wav)
    ref = _librosa_mel(wav)
    assert mel.shape == (80, 161) == ref.shape  # 80 mel frames per second (+1 centred)
    assert np.abs(mel - ref).max() < 2e-3


def test_reflect_padding_is_used_not_constant():
    wav = np.linspace(0.5, -0.5, 4000).astype(np.float32)
    mel = melspectrogram(wav)
    assert np.abs(mel[:, 0] - _librosa_mel(wav)[:, 0]).max() < 2e-3


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


def test_a_lying_frame_rate_does_not_grow_memory_with_the_frame_count():
    """A header declaring 1,000,000 fps over 30 minutes of speech: the window starts are computed per
    frame, not listed (a list would take ~55 GB)."""
    import tracemalloc

    tracemalloc.start()
    starts = mel_window_starts(80 * 1800, 1_000_000.0)
    assert len(starts) > 1_700_000_000 and starts[-1] == 80 * 1800 - 16 and starts[1_000_000] == 80
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()
