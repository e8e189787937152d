"""ffprobe wrapper: what a media file holds, with one-line errors for what it does not."""
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
    width: int = 0
    height: int = 0
    fps: float = 0.0
    frames: int = 0  # 0 when the container does not say
    duration: float = 0.0
    is_image: bool = False


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
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["unrecognised format"])[-1]
        raise LipsyncError(f"{path} is not a readable media file ({reason[:160]}); pass a video, image or audio file")
    data = json.loads(proc.stdout or "{}")
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = float(data.get("format", {}).get("duration") or 0.0)
    if video is None:
        return MediaInfo(path, False, audio is not None, duration=duration)
    rate = video.get("avg_frame_rate") or video.get("r_frame_rate") or "0/1"
    try:
        fps = float(Fraction(rate)) if rate != "0/0" else 0.0
    except (ValueError, ZeroDivisionError):
        fps = 0.0
    is_image = path.suffix.lower() in IMAGE_SUFFIXES or data.get("format", {}).get("format_name", "").endswith("_pipe")
    return MediaInfo(
        path, True, audio is not None, int(video.get("width", 0)), int(video.get("height", 0)), fps,
        int(video.get("nb_frames") or 0), duration, is_image,
    )
