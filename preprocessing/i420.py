"""Frames as ffmpeg decodes and x264 encodes them: planar YUV 4:2:0 (I420) in one uint8 array of
shape (H*3/2, W), the layout OpenCV's I420 conversions use; H and W are even.

Why: the generation pipeline changes only the lower face, yet converting every 720p frame to BGR
and back cost ffmpeg ~2.5 ms of CPU per frame and doubled the bytes through both pipes. Kept in
I420, only the face box is converted (BT.601 limited range, as OpenCV and the reference's
cv2.VideoCapture use), and pixels outside the blended area pass through bit for bit.
"""
from __future__ import annotations

import cv2
import numpy as np


PIX_FMTS = ("bgr24", "yuv420p")  # what frames travel as: BGR [H, W, 3] or I420 [H*3/2, W]


def check_pix_fmt(pix_fmt: str) -> None:
    if pix_fmt not in PIX_FMTS:
        raise ValueError(f"pix_fmt must be one of {', '.join(PIX_FMTS)}, not {pix_fmt}")


def i420_height(height: int) -> int:
    """Rows of the (H*3/2, W) array for a frame of `height` rows."""
    return height * 3 // 2


def frame_size(frame: np.ndarray) -> tuple[int, int]:
    """(width, height) of the picture an I420 array holds."""
    return frame.shape[1], frame.shape[0] * 2 // 3


def planes(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writable views: Y (H, W), U and V (H/2, W/2)."""
    width, height = frame_size(frame)
    flat = frame.reshape(-1)
    luma = width * height
    chroma = luma // 4
    y = flat[:luma].reshape(height, width)
    u = flat[luma:luma + chroma].reshape(height // 2, width // 2)
    v = flat[luma + chroma:luma + 2 * chroma].reshape(height // 2, width // 2)
    return y, u, v


def from_bgr(bgr: np.ndarray) -> np.ndarray:
    """BGR -> I420; an odd width or height is padded with black to even (as the encoder would)."""
    h, w = bgr.shape[:2]
    if h % 2 or w % 2:
        bgr = cv2.copyMakeBorder(bgr, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=0)
    return cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2YUV_I420)


def to_bgr(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)


def even_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """x1, y1, x2, y2 widened by at most one pixel per side to even coordinates (whole chroma samples)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return x1 - x1 % 2, y1 - y1 % 2, min(width, x2 + x2 % 2), min(height, y2 + y2 % 2)


def _join(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(i420_height(y.shape[0]), y.shape[1])


def region_to_bgr(frame: np.ndarray, box) -> np.ndarray:
    """The BGR pixels of box x1,y1,x2,y2 (exactly that box, any parity)."""
    width, height = frame_size(frame)
    x1, y1, x2, y2 = (int(v) for v in box)
    ex1, ey1, ex2, ey2 = even_box(box, width, height)
    y, u, v = planes(frame)
    cy, cx = slice(ey1 // 2, ey2 // 2), slice(ex1 // 2, ex2 // 2)
    bgr = cv2.cvtColor(_join(y[ey1:ey2, ex1:ex2], u[cy, cx], v[cy, cx]), cv2.COLOR_YUV2BGR_I420)
    return bgr[y1 - ey1:y2 - ey1, x1 - ex1:x2 - ex1]


def resized_bgr(frame: np.ndarray, width: int, height: int, interpolation: int) -> np.ndarray:
    """The whole frame scaled to width x height, as BGR: the planes are scaled first, so only the
    small picture is converted."""
    ew, eh = width + width % 2, height + height % 2
    y, u, v = planes(frame)
    small = _join(cv2.resize(y, (ew, eh), interpolation=interpolation),
                  cv2.resize(u, (ew // 2, eh // 2), interpolation=interpolation),
                  cv2.resize(v, (ew // 2, eh // 2), interpolation=interpolation))
    return cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420)[:height, :width]


def blend_bgr_patch(frame: np.ndarray, box: tuple[int, int, int, int], patch: np.ndarray,
                    weights: tuple[np.ndarray, np.ndarray] | None, first_row: int = 0) -> None:
    """Blend BGR `patch` into the even box x1,y1,x2,y2 of `frame` in place with `weights` (luma
    [h, w] and chroma [h/2, w/2] in 0..1, see `chroma_weight`; None = replace), from row
    `first_row` of the box down. Rows above it, and pixels of weight 0, keep their exact values."""
    x1, y1, x2, y2 = box
    patch_yuv = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_BGR2YUV_I420)
    py, pu, pv = planes(patch_yuv)
    y, u, v = planes(frame)
    top = first_row - first_row % 2
    targets = ((y[y1 + top:y2, x1:x2], py[top:], 1), (u[(y1 + top) // 2:y2 // 2, x1 // 2:x2 // 2], pu[top // 2:], 2),
               (v[(y1 + top) // 2:y2 // 2, x1 // 2:x2 // 2], pv[top // 2:], 2))
    for target, source, step in targets:
        if weights is None:
            target[:] = source
            continue
        weight = weights[step - 1][top // step:]
        current = target.astype(np.float32)
        target[:] = (current + weight * (source.astype(np.float32) - current) + 0.5).astype(np.uint8)


def chroma_weight(weight: np.ndarray) -> np.ndarray:
    """[h, w] luma weight -> the mean of each 2x2 block: one weight per chroma sample."""
    h, w = weight.shape
    return weight.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
