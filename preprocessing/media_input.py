"""How every ffmpeg and ffprobe call opens user media: as ONE local file of a supported container,
and nothing else. Limits on what a file may declare (frame rate, frame size, length) live here too.

ffmpeg's demuxers can open other resources: an HLS or DASH playlist, a concat script, an image
sequence pattern, an SDP file each name further files or URLs, and a playlist uploaded as a
"video" would make the service read another tenant's files. So each input is opened with
- `-protocol_whitelist file` and a `file:` URL: the name is a path, never `concat:`, `subfile:`,
  `data:`, `http:`...;
- `-format_whitelist`: only self-contained containers (below). A playlist or script is refused by
  ffmpeg itself ("Format not on whitelist") before it opens anything; `one_line_reason` turns that
  into a one-line error.
`image2` (a photo found by its file name) is allowed only for names without sequence or glob
characters, so `img%03d.png` can never read a numbered series. Uploads are stored under names
without an extension, where ffmpeg recognises images by their content (`*_pipe` demuxers).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lipsync_triton.errors import LipsyncError, TooLarge

# Self-contained containers (none refers to another file: mov's external data references stay
# disabled, ffmpeg's default). Video: mp4/mov, Matroska/WebM, AVI, MPEG-TS, FLV, GIF. Audio: WAV,
# W64, AIFF, CAF, FLAC, MP3, ADTS AAC, Ogg (Vorbis, Opus). Photos by content: PNG, JPEG, BMP, WebP, TIFF.
SUPPORTED_DEMUXERS = ("mov", "matroska", "avi", "mpegts", "flv", "gif", "wav", "w64", "aiff", "caf", "flac", "mp3", "aac",
                      "ogg", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif_pipe")
PATTERN_CHARACTERS = frozenset("%*?[]{}")
REFERRING_MEDIA = "a playlist, script or container that refers to other files (HLS, DASH, concat, image sequence...) is not accepted"


def input_args(path: str | Path) -> list[str]:
    """ffmpeg/ffprobe arguments that open `path` as one local media file (ends with `-i file:PATH`)."""
    path = Path(path)
    formats = SUPPORTED_DEMUXERS + (() if PATTERN_CHARACTERS & set(path.name) else ("image2",))
    return ["-protocol_whitelist", "file", "-format_whitelist", ",".join(formats), "-i", f"file:{path}"]


def one_line_reason(stderr_lines: list[str], fallback: str = "unrecognised format") -> str:
    """ffmpeg's reason for refusing an input, in words a user acts on."""
    text = " ".join(stderr_lines)
    if "not on whitelist" in text:
        return REFERRING_MEDIA
    return (stderr_lines[-1] if stderr_lines else fallback)[:160]


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise LipsyncError(f"{name} must be a number, not {os.environ[name]!r}") from None


@dataclass(frozen=True)
class MediaLimits:
    """What a presenter or speech file may declare before it is decoded (its headers can lie).

    - max_fps: a presenter above it is refused (not resampled: output frame i is presenter frame
      i, and a 1,000,000 fps header would otherwise make a day-long job out of a second of speech);
    - max_frame_pixels: width x height of a decoded frame (a 4096x4096 photo costs ~0.5 GB);
    - max_seconds: the longest video or speech; a file that does not state its duration is measured.
    """

    max_fps: float = 60.0
    max_frame_pixels: int = 4096 * 2304
    max_seconds: float | None = None

    @classmethod
    def from_env(cls) -> "MediaLimits":
        """The CLI's limits: `LIPSYNC_MAX_FPS`, `LIPSYNC_MAX_FRAME_PIXELS`, `LIPSYNC_MAX_MEDIA_SECONDS` (unset: no length limit)."""
        seconds = os.environ.get("LIPSYNC_MAX_MEDIA_SECONDS")
        return cls(max_fps=_env_float("LIPSYNC_MAX_FPS", cls.max_fps),
                   max_frame_pixels=int(_env_float("LIPSYNC_MAX_FRAME_PIXELS", cls.max_frame_pixels)),
                   max_seconds=_env_float("LIPSYNC_MAX_MEDIA_SECONDS", 0) if seconds else None)

    def check_frame(self, what: str, width: int, height: int) -> None:
        if width * height > self.max_frame_pixels:
            raise LipsyncError(f"{what} is {width}x{height} pixels; the largest accepted is {self.max_frame_pixels:,} pixels "
                               "(LIPSYNC_MAX_FRAME_PIXELS): scale it down first")

    def check_fps(self, what: str, fps: float) -> None:
        if fps > self.max_fps:
            raise LipsyncError(f"{what} runs at {fps:g} frames per second; the highest accepted is {self.max_fps:g} "
                               "(LIPSYNC_MAX_FPS): re-encode it at 25-60 fps (ffmpeg -i in.mp4 -r 25 out.mp4)")

    def check_seconds(self, what: str, seconds: float) -> None:
        if self.max_seconds is not None and seconds > self.max_seconds:
            raise MediaTooLong(f"{what} lasts {seconds:.0f} s; the limit is {self.max_seconds:.0f} s (LIPSYNC_MAX_MEDIA_SECONDS)")


class MediaTooLong(TooLarge):
    """A file longer than the length limit (the service answers 413: errors.HTTP_STATUS)."""
