"""Media that people really bring: rotated phone video, EXIF photos, stereo speech, truncated files,
chatty decoders, long speech."""
import subprocess

import cv2
import numpy as np
import pytest
from PIL import Image

from lipsync_triton.errors import LipsyncError
from lipsync_triton.client.mp4_writer import Mp4Writer
from lipsync_triton.preprocessing.audio import audio_chunks, load_audio, load_mel
from lipsync_triton.preprocessing.ffmpeg_pipe import FfmpegProcess
from lipsync_triton.preprocessing.media_probe import probe_media
from lipsync_triton.preprocessing.mel import mel_from_chunks, melspectrogram
from lipsync_triton.preprocessing.video import FrameSource
from lipsync_triton.samples import astronaut_bgr

from conftest import librosa_mel as _librosa_mel


def portrait_frame(width=360, height=640) -> np.ndarray:
    """An upright portrait picture: the astronaut's face on a graded background."""
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:] = np.linspace(40, 200, height, dtype=np.uint8)[:, None, None]
    face = cv2.resize(astronaut_bgr(), (width, width))
    top = (height - width) // 2
    canvas[top:top + width] = face
    return canvas


@pytest.fixture(scope="module")
def phone_media(tmp_path_factory):
    """A portrait scene stored as a phone does: coded 640x360 landscape + rotation metadata / EXIF 6."""
    d = tmp_path_factory.mktemp("phone")
    upright = portrait_frame()
    coded = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)  # what the sensor wrote
    plain = d / "coded.mp4"
    writer = Mp4Writer(plain, 640, 360, 25, None, crf=12)
    for _ in range(25):
        writer.write(coded)
    writer.close()
    rotated = d / "phone.mp4"
    # A phone held upright: display matrix "rotate 90 degrees clockwise" (ffprobe: rotation -90).
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=-90", str(rotated)], check=True)
    # The other direction (ffprobe: rotation 90) over frames coded the other way round.
    plain_cw = d / "coded_cw.mp4"
    writer = Mp4Writer(plain_cw, 640, 360, 25, None, crf=12)
    writer.write(cv2.rotate(upright, cv2.ROTATE_90_CLOCKWISE))
    writer.close()
    rotated_ccw = d / "phone_ccw.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(plain_cw), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated_ccw)], check=True)
    photo = d / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(cv2.cvtColor(coded, cv2.COLOR_BGR2RGB)).save(photo, quality=95, exif=exif)
    return {"upright": upright, "video": rotated, "video_ccw": rotated_ccw, "photo": photo}


@pytest.mark.parametrize("kind", ["video", "video_ccw", "photo"])
def test_rotated_phone_media_decode_upright(phone_media, kind):
    source = FrameSource(phone_media[kind])
    assert probe_media(phone_media[kind]).rotation in ({"video": 270, "video_ccw": 90}.get(kind, 0),)
    assert (source.width, source.height) == (360, 640)
    frame = next(iter(source.frames()))
    assert frame.shape == (640, 360, 3)
    assert np.abs(frame.astype(np.int16) - phone_media["upright"]).mean() < 4.0


@pytest.mark.parametrize("kind", ["video", "photo"])
def test_rotated_phone_media_give_an_upright_output(triton, media, phone_media, tmp_path, kind):
    from test_generate import generate_cli

    out = tmp_path / "upright.mp4"
    summary = generate_cli(triton, phone_media[kind], media["speech"], out, "--no-cache")
    info = probe_media(out)
    assert (info.width, info.height, info.rotation) == (360, 640, 0)
    assert summary["frames_without_face"] == 0  # the face was found on upright frames
    frame = next(iter(FrameSource(out).frames()))
    upright = next(iter(FrameSource(phone_media[kind]).frames()))  # the input as a player shows it
    background = np.ones(frame.shape[:2], bool)
    background[140:500] = False  # the face band; everything above and below must equal the input
    assert np.abs(frame.astype(np.int16) - upright)[background].mean() < 3.0


def test_stereo_speech_is_downmixed_to_the_channel_mean_like_librosa(tmp_path):
    import librosa

    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Stereo speech from a phone, recorded at forty eight kilohertz."], check=True)
    stereo = tmp_path / "stereo.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-af", "pan=stereo|c0=c0|c1=0.6*c0", "-ar", "48000",
                    "-c:a", "libmp3lame", str(stereo)], check=True)
    reference, _ = librosa.load(stereo, sr=16000)
    expected = _librosa_mel(reference)
    ours = load_mel(stereo)
    n = min(expected.shape[1], ours.shape[1])
    assert abs(expected.shape[1] - ours.shape[1]) <= 1
    assert np.abs(expected[:, :n] - ours[:, :n]).mean() <= 0.02


def test_chunked_mel_equals_the_one_shot_mel_at_every_seam():
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 7) / 16000
    wav = (0.4 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 2 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    one_shot = melspectrogram(wav)
    for size in (401, 1000, 4321, 16000, 50000):
        chunked = mel_from_chunks([wav[i:i + size] for i in range(0, len(wav), size)], expected_seconds=1.0)
        assert chunked.shape == one_shot.shape
        assert np.abs(chunked - one_shot).max() <= 1e-5


def test_audio_is_decoded_in_bounded_chunks(tmp_path):
    path = tmp_path / "long.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=25", "-ac", "2", str(path)], check=True)
    from lipsync_triton.preprocessing.audio import _checked_audio, _ffmpeg_chunks

    sizes = [len(c) for c in audio_chunks(path, chunk_seconds=10.0)]  # in-process (a WAV)
    assert max(sizes) <= 160000 and len(sizes) == 3 and sum(sizes) == len(load_audio(path)) == 400000
    sizes = [len(c) for c in _ffmpeg_chunks(path, 10.0, _checked_audio(path))]
    assert max(sizes) == 160000 and sum(sizes) == 400000


@pytest.fixture(scope="module")
def half_video(media, tmp_path_factory):
    path = tmp_path_factory.mktemp("cut") / "half.mp4"
    data = media["clip"].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_video_cut_in_half_fails_naming_where_it_ends(half_video):
    expected = probe_media(half_video).frames
    assert expected == 50
    with pytest.raises(LipsyncError, match=r"video ends after \d+ of 50 frames: .+truncated"):
        for _ in FrameSource(half_video).frames():
            pass


def test_a_truncated_video_is_never_looped_silently(triton, half_video, media, tmp_path):
    from test_generate import run_cli

    out = tmp_path / "result.mp4"
    proc = run_cli("generate", "--face", half_video, "--audio", media["speech"], "--outfile", out, "--url", triton.grpc_url,
                   "--quiet", "--no-cache")
    assert proc.returncode != 0 and not out.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "video ends after" in lines[0] and "of 50 frames" in lines[0], proc.stderr


@pytest.mark.timeout(120)
def test_a_chatty_decoder_never_blocks_on_its_stderr():
    """Far more than a pipe's 64 KB of log lines while we read stdout: stderr must be drained."""
    args = ["-v", "debug", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=8", "-vf", "showinfo",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    with FfmpegProcess(args, read=True) as ff:
        frame = bytearray(64 * 64 * 3)
        frames = 0
        while ff.readinto(memoryview(frame)) == len(frame):
            frames += 1
        assert ff.finish() == 0
    assert frames == 200


@pytest.mark.parametrize("rate,channels,subtype", [(22050, 1, "PCM_16"), (48000, 2, "PCM_24"), (44100, 2, "FLOAT")])
def test_wav_speech_read_in_process_gives_what_ffmpeg_decodes(tmp_path, rate, channels, subtype):
    import soundfile

    from lipsync_triton.preprocessing.audio import _checked_audio, _ffmpeg_chunks, _in_process_info

    rng = np.random.default_rng(rate)
    t = np.arange(int(rate * 3.3)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] * np.linspace(1.0, 0.4, channels) + 0.02 * rng.normal(size=(t.size, channels))
    path = tmp_path / "speech.wav"
    soundfile.write(path, wave.astype(np.float32), rate, subtype=subtype)
    assert _in_process_info(path) is not None
    ours = load_audio(path)
    theirs = np.concatenate(list(_ffmpeg_chunks(path, 10.0, _checked_audio(path))))
    assert len(ours) == len(theirs)
    if channels == 1:
        assert np.array_equal(ours, theirs)  # the same soxr at the same quality: bit for bit
    else:
        assert np.abs(ours - theirs).max() <= 1e-6  # mean then resample vs resample then mean
    assert np.abs(load_mel(path) - mel_from_chunks(_ffmpeg_chunks(path, 10.0, _checked_audio(path)), 3.3)).max() <= 1e-4


def test_compressed_speech_goes_through_ffmpeg(tmp_path):
    from lipsync_triton.preprocessing.audio import _in_process_info

    mp3 = tmp_path / "speech.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=2", "-c:a", "libmp3lame", str(mp3)],
                   check=True)
    assert _in_process_info(mp3) is None and load_mel(mp3).shape[1] > 100
