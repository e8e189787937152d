"""Face crops in (96x96 model inputs) and generated faces out (pasted back with a soft blend)."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

MODEL_SIZE = 96


def crop_face(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The padded, clipped box resized to the model's 96x96 (uint8 BGR)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return cv2.resize(frame[y1:y2, x1:x2], (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_AREA)


@lru_cache(maxsize=64)
def lower_face_mask(height: int, width: int) -> np.ndarray:
    """Feathered weight map [h,w,1] in [0,1]: 1 over the mouth and jaw, fading to 0 before the box edges.

    The model only regenerates the lower half (its input mask); blending just that region with soft
    edges removes the visible rectangle that the reference's hard paste leaves.
    """
    mask = np.zeros((height, width), np.float32)
    centre = (width // 2, int(height * 0.66))
    axes = (max(1, int(width * 0.34)), max(1, int(height * 0.22)))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, thickness=-1)
    sigma = max(1.0, min(height, width) * 0.06)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return mask[:, :, None]


def paste_face(frame: np.ndarray, box: np.ndarray, generated: np.ndarray, blend: bool = True) -> None:
    """Write the generated 96x96 crop back into `frame` (in place) at the box size."""
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = y2 - y1, x2 - x1
    patch = cv2.resize(generated, (w, h), interpolation=cv2.INTER_LINEAR)
    if not blend:
        frame[y1:y2, x1:x2] = patch
        return
    region = frame[y1:y2, x1:x2].astype(np.float32)
    alpha = lower_face_mask(h, w)
    frame[y1:y2, x1:x2] = (region + alpha * (patch.astype(np.float32) - region) + 0.5).astype(np.uint8)
