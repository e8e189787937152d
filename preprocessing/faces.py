"""Face boxes: detector input letterboxing, candidate filtering (threshold + NMS), choosing one
face, filling frames without a face, temporal smoothing and padding."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipsync_triton.errors import NoFaceFound, OptionError
from . import i420

SCORE_THRESHOLD = 0.5
NMS_IOU = 0.3


@dataclass(frozen=True)
class Letterbox:
    """Frame -> fixed detector input: scale to fit, pad right/bottom with black."""

    height: int
    width: int

    def scale_for(self, frame_h: int, frame_w: int) -> float:
        return min(self.height / frame_h, self.width / frame_w)

    def fitted(self, frame_h: int, frame_w: int) -> tuple[int, int, float]:
        """(width, height) the frame is scaled to inside the box, and the scale."""
        scale = self.scale_for(frame_h, frame_w)
        return max(1, round(frame_w * scale)), max(1, round(frame_h * scale)), scale

    def apply(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        return self._place(*frame.shape[:2], lambda w, h, interp: cv2.resize(frame, (w, h), interpolation=interp))

    def apply_i420(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """`apply` for an I420 frame: its planes are scaled down first, so only the small picture is
        converted to BGR."""
        width, height = i420.frame_size(frame)
        return self._place(height, width, lambda w, h, interp: i420.resized_bgr(frame, w, h, interp))

    def _place(self, frame_h: int, frame_w: int, resize) -> tuple[np.ndarray, float]:
        """The canvas with `resize(w, h, interpolation)` (the frame as BGR at the fitted size) top left."""
        nw, nh, scale = self.fitted(frame_h, frame_w)
        canvas = np.zeros((self.height, self.width, 3), np.uint8)
        canvas[:nh, :nw] = resize(nw, nh, cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        return canvas, scale


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (boxes x1,y1,x2,y2)."""
    order = np.argsort(-scores)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        overlap = inter / np.maximum(areas[i] + areas[order[1:]] - inter, 1e-6)
        order = order[1:][overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def faces_from_candidates(scores: np.ndarray, boxes: np.ndarray, scale: float, threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """Detector top-K output for one frame -> [F,5] (x1,y1,x2,y2,score) in frame pixels."""
    mask = scores >= threshold
    if not mask.any():
        return np.zeros((0, 5), np.float32)
    s, b = scores[mask], boxes[mask] / scale
    kept = nms(b, s)
    return np.concatenate([b[kept], s[kept, None]], axis=1).astype(np.float32)


@dataclass(frozen=True)
class FaceSelector:
    """Which face to follow when several are present: 'largest', 'index:N' (left to right) or 'point:X,Y'."""

    mode: str = "largest"
    index: int = 0
    point: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def parse(cls, text: str) -> "FaceSelector":
        text = (text or "largest").strip().lower()
        try:
            if text == "largest":
                return cls()
            if text.startswith("index:"):
                return cls("index", index=int(text.split(":", 1)[1]))
            if text.startswith("point:"):
                x, y = (float(v) for v in text.split(":", 1)[1].split(","))
                return cls("point", point=(x, y))
        except ValueError:
            pass
        raise OptionError("face_select", f"{text!r}: use 'largest', 'index:N' (0 = leftmost) or 'point:X,Y' (pixels)")

    def key(self) -> str:
        return {"largest": "largest", "index": f"index:{self.index}", "point": f"point:{self.point[0]:g},{self.point[1]:g}"}[self.mode]

    def choose(self, faces: np.ndarray) -> np.ndarray | None:
        if len(faces) == 0:
            return None
        if self.mode == "largest":
            areas = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
            return faces[int(np.argmax(areas)), :4]
        if self.mode == "index":
            ordered = faces[np.argsort(faces[:, 0])]
            return ordered[self.index, :4] if self.index < len(ordered) else None
        x, y = self.point
        inside = [(f[2] - f[0]) * (f[3] - f[1]) for f in faces if f[0] <= x <= f[2] and f[1] <= y <= f[3]]
        if inside:
            candidates = [f for f in faces if f[0] <= x <= f[2] and f[1] <= y <= f[3]]
            return candidates[int(np.argmin(inside))][:4]
        centres = np.stack([(faces[:, 0] + faces[:, 2]) / 2, (faces[:, 1] + faces[:, 3]) / 2], axis=1)
        return faces[int(np.argmin(((centres - (x, y)) ** 2).sum(1))), :4]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (x1,y1,x2,y2) with each of `boxes` [F,>=4]."""
    xx1 = np.maximum(box[0], boxes[:, 0])
    yy1 = np.maximum(box[1], boxes[:, 1])
    xx2 = np.minimum(box[2], boxes[:, 2])
    yy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-6)


class FaceFollower:
    """Follows ONE person over time: the selector picks the face in the first frame with faces; after
    that each frame takes the face overlapping the previous choice most (IoU >= `min_iou`). A frame
    where that person is not detected gives None (filled from the nearest detection later), so a
    missed detection never hands the mouth to a neighbour and smoothing never averages two people.
    After `reacquire_after` frames without the person, the selector chooses afresh (they left)."""

    def __init__(self, selector: FaceSelector, min_iou: float = 0.2, reacquire_after: int = 50):
        self.selector = selector
        self.min_iou = min_iou
        self.reacquire_after = reacquire_after
        self._last: np.ndarray | None = None
        self._seen = 0  # the frame the person was last detected in
        self._calls = 0

    def next(self, faces: np.ndarray, index: int | None = None) -> np.ndarray | None:
        """The followed face in frame `index` (default: one frame after the previous call)."""
        now = self._calls if index is None else index
        self._calls = now + 1
        if self._last is None or now - self._seen > self.reacquire_after:
            chosen = self.selector.choose(faces)
        else:
            chosen = self.match(faces, self._last)
        if chosen is not None:
            self._last, self._seen = np.asarray(chosen, np.float32), now
        return chosen

    def match(self, faces: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
        """The face overlapping `reference` most (IoU >= `min_iou`), or None: the same person."""
        if not len(faces):
            return None
        overlaps = iou(reference, faces)
        best = int(np.argmax(overlaps))
        return faces[best, :4] if overlaps[best] >= self.min_iou else None


def fill_missing(boxes: list[np.ndarray | None], source: str = "video") -> tuple[np.ndarray, int]:
    """Frames without a face reuse the nearest detected box; fail only when no frame has one.

    Returns ([N,4] float boxes, number of frames that were filled).
    """
    found = [i for i, b in enumerate(boxes) if b is not None]
    if not found:
        raise NoFaceFound(source)
    found_arr = np.asarray(found)
    out = np.empty((len(boxes), 4), np.float32)
    for i, box in enumerate(boxes):
        if box is None:
            j = found_arr[np.argmin(np.abs(found_arr - i))]
            out[i] = boxes[j]
        else:
            out[i] = box
    return out, len(boxes) - len(found)


def smooth(boxes: np.ndarray, window: int = 5) -> np.ndarray:
    """The reference's forward-looking moving mean: box i = mean of boxes [i, i+window), clamped at the end."""
    n = len(boxes)
    out = np.empty_like(boxes, dtype=np.float32)
    for i in range(n):
        lo = i if i + window <= n else max(0, n - window)
        out[i] = boxes[lo:lo + window].mean(axis=0)
    return out


MIN_CHECKED_FACE_PX = 16


def check_pads(boxes: np.ndarray, pads: tuple[int, int, int, int]) -> None:
    """Each pad from minus half to plus the face box's size on its side: more paints the mouth over
    the chest or the forehead (or replaces nothing). One line naming the bound when not."""
    if not len(boxes) or not any(pads):
        return
    sizes = boxes[:, 2:4] - boxes[:, 0:2]  # width, height per face
    finite = np.isfinite(sizes).all(axis=1) & (sizes >= MIN_CHECKED_FACE_PX).all(axis=1)  # not a stray speck
    if not finite.any():
        return
    face_w, face_h = (int(v) for v in np.floor(sizes[finite].min(axis=0)))
    for pad, side, size, what in zip(pads, ("above", "below", "left of", "right of"), (face_h, face_h, face_w, face_w),
                                     ("height", "height", "width", "width")):
        if pad and not -size // 2 <= pad <= size:
            raise OptionError("pads", f"{pad} px {side} the face is outside what the face box allows (its {what} is "
                                      f"{size} px): use {-size // 2} to {size}")


def pad_and_clip(boxes: np.ndarray, pads: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """Apply pads (top, bottom, left, right) and clip to the frame -> int [N,4] x1,y1,x2,y2 (>= 2 px)."""
    check_pads(boxes, pads)
    top, bottom, left, right = pads
    out = np.empty((len(boxes), 4), np.int32)
    out[:, 0] = np.clip(np.round(boxes[:, 0]) - left, 0, width - 2)
    out[:, 1] = np.clip(np.round(boxes[:, 1]) - top, 0, height - 2)
    out[:, 2] = np.clip(np.round(boxes[:, 2]) + right, out[:, 0] + 2, width)
    out[:, 3] = np.clip(np.round(boxes[:, 3]) + bottom, out[:, 1] + 2, height)
    return out
