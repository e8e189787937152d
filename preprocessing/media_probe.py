"""ffprobe wrapper: what a media file holds, as a player shows it, with one-line errors for what it does not.

Phone videos are stored landscape with a display-matrix rotation; ffmpeg's decoder applies it
(autorotate), so the displayed size (width and height swapped for +-90 degrees) is the size of
every decoded frame. Frame counts and durations come from the streams, not the container.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from lipsync_triton.errors import LipsyncError
from lipsync_triton.process_guard import OWN_GROUP
from .media_input import MediaLimits, input_args, one_line_reason

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    has_video: bool
    has_audio: bool
    width: int = 0  # as displayed (after rotation)
    height: int = 0
    fps: float = 0.0
    frames: int = 0  # video stream's frame count; 0 when the container does not say
    duration: float = 0.0  # container duration
    is_image: bool = False
    rotation: int = 0  # degrees the player rotates the coded picture (0, 90, 180, 270)
    video_duration: float = 0.0  # video stream's own duration (0 when unknown)
    audio_channels: int = 0
    audio_duration: float = 0.0

    @property
    def stated_seconds(self) -> float:
        """The length the file states (0 when it states none: a stream written to a pipe)."""
        return self.video_duration or self.audio_duration or self.duration


def _rotation(stream: dict) -> int:
    angle = 0.0
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            angle = float(side["rotation"])
    if not angle and "rotate" in (stream.get("tags") or {}):
        angle = float(stream["tags"]["rotate"])
    return int(round(angle)) % 360


def _fps(stream: dict) -> float:
    for key in ("avg_frame_rate", "r_frame_rate"):
        try:
            value = Fraction(stream.get(key) or "0/1")
        except (ValueError, ZeroDivisionError):
            continue
        if value > 0:
            return float(value)
    return 0.0


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def probe_media(path: str | Path) -> MediaInfo:
    path = Path(path)
    if not path.exists():
        raise LipsyncError(f"file not found: {path}")
    if not path.is_file():
        raise LipsyncError(f"not a file: {path}")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise LipsyncError(f"cannot read {path}: {exc.strerror}") from None
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", *input_args(path)],
        capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL, **OWN_GROUP,
    )
    if proc.returncode != 0:
        reason = one_line_reason(proc.stderr.strip().splitlines()).replace(f"file:{path}: ", "")
        raise LipsyncError(f"{path} is not a readable media file ({reason}); pass a video, image or audio file")
    data = json.loads(proc.stdout or "{}")
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = _float(data.get("format", {}).get("duration"))
    audio_fields = {"audio_channels": int(audio.get("channels") or 0), "audio_duration": _float(audio.get("duration"))} if audio else {}
    if video is None:
        return MediaInfo(path, False, audio is not None, duration=duration, **audio_fields)
    rotation = _rotation(video)
    width, height = int(video.get("width", 0)), int(video.get("height", 0))
    if rotation in (90, 270):
        width, height = height, width
    is_image = path.suffix.lower() in IMAGE_SUFFIXES or data.get("format", {}).get("format_name", "").endswith("_pipe")
    return MediaInfo(
        path, True, audio is not None, width, height, _fps(video), int(video.get("nb_frames") or 0), duration, is_image,
        rotation=rotation, video_duration=_float(video.get("duration")), **audio_fields,
    )


def media_seconds(info: MediaInfo, cap: float | None = None) -> float:
    """The file's length in seconds: as stated, or, when it states none, measured by reading its
    packets without decoding them (stopping just past `cap`, so a lying file costs little)."""
    if info.is_image or info.stated_seconds:
        return info.stated_seconds
    stream = "0:v:0" if info.has_video else "0:a:0"
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", *input_args(info.path), "-map", stream, "-c", "copy",
         *(["-t", f"{cap + 1:g}"] if cap else []), "-f", "null", "-", "-progress", "pipe:1", "-nostats"],
        capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL, **OWN_GROUP,
    )
    times = [line.partition("=")[2] for line in proc.stdout.splitlines() if line.startswith("out_time_us=")]
    try:
        return max(0.0, int(times[-1]) / 1e6) if times else 0.0
    except ValueError:  # "N/A" when no packet carried a timestamp
        return 0.0


def check_length(info: MediaInfo, limits: MediaLimits, what: str) -> None:
    """The file's length (stated, or measured when it states none) against the limit, if there is one."""
    if limits.max_seconds is not None:
        limits.check_seconds(what, media_seconds(info, limits.max_seconds))
