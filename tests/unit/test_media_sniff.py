"""The API's first look at an upload (no process started): accepted containers pass by their first
bytes whatever their name; garbage, text and playlists get a one-line refusal at once."""
from __future__ import annotations

import subprocess

import cv2
import pytest

from lipsync_triton.errors import LipsyncError
from lipsync_triton.preprocessing.media_sniff import AUDIO, IMAGE, VIDEO, check_upload, sniff
from lipsync_triton.samples import astronaut_bgr


def _ffmpeg(out, *args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(out)], check=True)
    return out


def test_real_containers_are_recognised_by_content_not_name(media, tmp_path):
    photo = tmp_path / "noext_photo"
    cv2.imwrite(str(tmp_path / "p.png"), astronaut_bgr())
    (tmp_path / "p.png").rename(photo)
    tone = ["-f", "lavfi", "-i", "sine=frequency=300:duration=0.5"]
    samples = {
        "mp4": (media["clip"], ("mov", VIDEO)),
        "wav": (media["speech"], ("wav", AUDIO)),
        "png": (photo, ("png_pipe", IMAGE)),
        "mp3": (_ffmpeg(tmp_path / "a.mp3", *tone), ("mp3", AUDIO)),
        "flac": (_ffmpeg(tmp_path / "a.flac", *tone), ("flac", AUDIO)),
        "ogg": (_ffmpeg(tmp_path / "a.ogg", *tone, "-c:a", "libvorbis"), ("ogg", AUDIO)),
        "webm": (_ffmpeg(tmp_path / "v.webm", "-i", str(media["clip"]), "-t", "0.3", "-c:v", "libvpx"), ("matroska", VIDEO)),
        "ts": (_ffmpeg(tmp_path / "v.ts", "-i", str(media["clip"]), "-t", "0.3"), ("mpegts", VIDEO)),
    }
    for name, (path, expected) in samples.items():
        renamed = path.with_name(f"upload_{name}")  # the API stores uploads without their names
        renamed.write_bytes(path.read_bytes())
        assert sniff(renamed) == expected, name
    check_upload(samples["mp4"][0], "face", (VIDEO, IMAGE))
    check_upload(samples["mp3"][0], "audio", (AUDIO, VIDEO))
    with pytest.raises(LipsyncError, match="audio only.*upload a presenter video or photo"):
        check_upload(samples["wav"][0], "face", (VIDEO, IMAGE))
    with pytest.raises(LipsyncError, match="a photo.*upload a speech track"):
        check_upload(photo, "audio", (AUDIO, VIDEO))


@pytest.mark.parametrize("content, words", [
    (b"", "not a video, photo or audio file"),
    (b"hello, this is a text file\n", "not a video, photo or audio file"),
    (b"\x00" * 1000, "not a video, photo or audio file"),
    (b"#EXTM3U\n#EXTINF:10,\n/etc/passwd\n", "refers to other files"),
    (b"\xef\xbb\xbfffconcat version 1.0\nfile 'x.mp4'\n", "refers to other files"),
    (b'<?xml version="1.0"?><MPD/>', "refers to other files"),
])
def test_garbage_text_and_playlists_are_refused_in_one_line(tmp_path, content, words):
    path = tmp_path / "upload"
    path.write_bytes(content)
    with pytest.raises(LipsyncError, match=words) as refused:
        check_upload(path, "face", (VIDEO, IMAGE))
    assert "\n" not in str(refused.value) and str(tmp_path) not in str(refused.value)
