"""The bundled demo inputs, made on the fly from packaged public-domain data: a presenter clip from
scikit-image's `data.astronaut()` photo with gentle camera motion, and speech from espeak-ng."""
from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from lipsync_triton.errors import LipsyncError

DEMO_TEXT = ("Hello, and welcome. This presenter video was lip synced on your own servers, "
             "with Wav2Lip served by Triton Inference Server.")


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def presenter_frames(seconds: float, fps: float = 25.0, width: int = 1280, height: int = 720, motion: bool = True,
                     face: np.ndarray | None = None):
    """Yield frames: the photo centred on a soft background, with a slow zoom and drift."""
    photo = astronaut_bgr() if face is None else face
    side = height
    photo = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
    background = cv2.GaussianBlur(cv2.resize(photo, (width, height)), (0, 0), 25)
    canvas = background.copy()
    x0 = (width - side) // 2
    canvas[:, x0:x0 + side] = photo
    n = max(1, int(round(seconds * fps)))
    for i in range(n):
        if not motion:
            yield canvas
            continue
        t = i / fps
        zoom = 1.0 + 0.04 * math.sin(2 * math.pi * t / 6.0)
        dx = 12.0 * math.sin(2 * math.pi * t / 5.0)
        dy = 6.0 * math.cos(2 * math.pi * t / 7.0)
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0.0, zoom)
        matrix[:, 2] += (dx, dy)
        yield cv2.warpAffine(canvas, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def write_presenter_clip(path: str | Path, seconds: float, fps: float = 25.0, width: int = 1280, height: int = 720,
                         motion: bool = True) -> Path:
    from lipsync_triton.client.mp4_writer import Mp4Writer

    writer = Mp4Writer(path, width, height, fps, None, crf=20)
    try:
        for frame in presenter_frames(seconds, fps, width, height, motion):
            writer.write(frame)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def write_speech(path: str | Path, text: str = DEMO_TEXT, repeat: int = 1, timeout: float | None = None) -> Path:
    """Speech with espeak-ng (Debian package), as a 16-bit WAV. The text goes in on stdin, so it is
    only ever spoken: a text such as `-f/etc/passwd` is never read as an option; `timeout` bounds the
    synthesis (LipsyncError past it, no file written)."""
    if shutil.which("espeak-ng") is None:
        raise LipsyncError("espeak-ng not found: install the Debian package espeak-ng (make setup does)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial.wav")
    try:
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(tmp), "--stdin"], input=" ".join([text] * repeat).encode("utf-8"),
                       check=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        raise LipsyncError(f"speaking the text took longer than {timeout:g} s: send a shorter text") from None
    tmp.replace(path)
    return path
