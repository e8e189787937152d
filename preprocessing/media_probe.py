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
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        capture_output=True, text=True, errors="replace",
    )
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["unrecognised format"])[-1]
        raise LipsyncError(f"{path} is not a readable media file ({reason[:160]}); pass a video, image or audio file")
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
