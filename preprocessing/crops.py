"""Face crops in (96x96 model inputs) and generated faces out (pasted back with a soft blend)."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from lipsync_triton.model_contract import FACE_SIZE as MODEL_SIZE  # the model's face crop: 96 x 96
from . import i420

# Wav2Lip regenerates the lower half of its crop (rows 48-95: mouth, chin, jaw). The blend weight
# rises from 0 to 1 across the half-line, between these fractions of the box height ...
HALF_LINE_RAMP = (0.42, 0.56)
# ... and falls to 0 over a few pixels at the left, right and bottom box edges.
EDGE_FEATHER = 0.04  # of the box size, at least 2 px


def crop_face(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The padded, clipped box resized to the model's 96x96 (uint8 BGR) with cv2's default bilinear
    interpolation, as the reference inference does."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return cv2.resize(frame[y1:y2, x1:x2], (MODEL_SIZE, MODEL_SIZE))


def crop_face_i420(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """`crop_face` for an I420 frame: only the box is converted to BGR."""
    return cv2.resize(i420.region_to_bgr(frame, box), (MODEL_SIZE, MODEL_SIZE))


def _edge_ramp(length: int, feather: float) -> np.ndarray:
    """1 inside, falling linearly to ~0 over `feather` pixels at both ends."""
    distance = np.minimum(np.arange(length), np.arange(length)[::-1]) + 0.5
    return np.clip(distance / feather, 0.0, 1.0)


@lru_cache(maxsize=64)
def lower_face_mask(height: int, width: int) -> np.ndarray:
    """Blend weight [h,w,1] in [0,1]: ~1 over the regenerated lower half (mouth, chin, jaw), 0 on the
    upper face, feathered across the half-line and at the box edges so no rectangle shows."""
    rows = (np.arange(height) + 0.5) / height
    lo, hi = HALF_LINE_RAMP
    vertical = np.clip((rows - lo) / (hi - lo), 0.0, 1.0)
    vertical = vertical * vertical * (3 - 2 * vertical)  # smoothstep: no visible kink at either end
    feather = max(2.0, EDGE_FEATHER * min(height, width))
    bottom = np.clip((height - np.arange(height) - 0.5) / feather, 0.0, 1.0)
    weight = (vertical * bottom)[:, None] * _edge_ramp(width, feather)[None, :]
    return weight.astype(np.float32)[:, :, None]


def paste_face(frame: np.ndarray, box: np.ndarray, generated: np.ndarray, blend: bool = True) -> None:
    """Write the generated 96x96 crop back into `frame` (in place) at the box size."""
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = y2 - y1, x2 - x1
    patch = cv2.resize(generated, (w, h), interpolation=cv2.INTER_LINEAR)
    if not blend:
        frame[y1:y2, x1:x2] = patch
        return
    alpha = lower_face_mask(h, w)
    top = int(HALF_LINE_RAMP[0] * h)  # the weight is 0 above: blend only the rows that change
    region = frame[y1 + top:y2, x1:x2]
    region_f = region.astype(np.float32)
    region[:] = (region_f + alpha[top:] * (patch[top:].astype(np.float32) - region_f) + 0.5).astype(np.uint8)


def paste_face_i420(frame: np.ndarray, box: np.ndarray, generated: np.ndarray, blend: bool = True) -> None:
    """`paste_face` for an I420 frame (in place), on the box widened to even coordinates (at most one
    pixel per side) so that it covers whole chroma samples; outside the blended area (the upper
    face, the feathered edges' zero weight, the rest of the frame) pixels keep their exact values."""
    width, height = i420.frame_size(frame)
    x1, y1, x2, y2 = i420.even_box(box, width, height)
    h, w = y2 - y1, x2 - x1
    patch = cv2.resize(generated, (w, h), interpolation=cv2.INTER_LINEAR)
    if not blend:
        i420.blend_bgr_patch(frame, (x1, y1, x2, y2), patch, None)
        return
    i420.blend_bgr_patch(frame, (x1, y1, x2, y2), patch, _i420_weights(h, w), first_row=int(HALF_LINE_RAMP[0] * h))


@lru_cache(maxsize=64)
def _i420_weights(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """`lower_face_mask` for the Y plane and per chroma sample (boxes repeat from frame to frame)."""
    luma = lower_face_mask(height, width)[:, :, 0]
    return luma, i420.chroma_weight(luma)
