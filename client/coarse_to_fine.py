"""Which frames the face detector sees: keyframes first, then only where the face moved.

A presenter's head is still most of the time, and between two detections the boxes are
interpolated anyway. So the detector first sees every `keyframe_every`-th frame. An interval
between two keyframes is looked at closer when the followed face appeared or vanished, or when its
box moved by more than `motion` of the face height (any edge) AND the path through the
neighbouring keyframes bends by as much (a drift or a slow zoom is interpolated exactly, so it is
left alone). Then the frame halfway between is detected and each half checked the same way (by
the move alone), down to the finest stride the candidates were sampled at. A still or steadily
drifting presenter costs one detection per keyframe interval; a face that starts, stops or jumps
is detected as densely as before where it does. A movement that starts and ends inside one
interval (a quick nod) is not seen.

Keyframes are detected in chunks (2, 2, 4, ... up to `chunk_keyframes`, one request each), a few
chunks ahead; a chunk is refined once the next chunk's first keyframe is known (it tells whether
the chunk's last interval bends), and its results leave in frame order for the follower and the
box stream. The frames held are bounded by the chunks in flight.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from lipsync_triton.preprocessing.faces import FaceFollower

# The first two chunks are small, then sizes double: a chunk is handed out once the next chunk's
# first keyframe is back, and generation needs the first boxes early.
FIRST_CHUNK_KEYFRAMES = 2


@dataclass
class Candidate:
    """A frame the detector may see: its index and its detector input (plus the input's scale)."""

    index: int
    image: np.ndarray
    scale: float


@dataclass
class Chunk:
    """Consecutive keyframes and, per keyframe, the candidates since the previous keyframe."""

    keys: list[Candidate]
    between: list[list[Candidate]]


# Detector for a list of candidates -> their faces ([F,5] x1,y1,x2,y2,score in frame pixels), in order.
DetectFn = Callable[[list[Candidate]], list[np.ndarray]]
# The same for chunks' keyframes, several chunks in flight: yields (chunk, faces of its keys) in order.
DetectAheadFn = Callable[[Iterable[Chunk]], Iterator[tuple[Chunk, list[np.ndarray]]]]


def moved(a: np.ndarray | None, b: np.ndarray | None, motion: float) -> bool:
    """Whether the face changed enough between two detections that the frames between need a look."""
    if a is None or b is None:
        return (a is None) != (b is None)  # appeared or vanished; none at both ends stays none
    height = max(float(a[3] - a[1]), float(b[3] - b[1]), 1.0)
    return float(np.abs(np.asarray(b, np.float32) - np.asarray(a, np.float32)).max()) > motion * height


def chunks(candidates: Iterable[Candidate], keyframe_every: int, chunk_keyframes: int) -> Iterator[Chunk]:
    """Group candidates (frame order, finest stride) into chunks of 2, 2, 4, ... `chunk_keyframes`
    keyframes: frames whose index is a multiple of `keyframe_every`, and the last candidate."""
    keys: list[Candidate] = []
    between: list[list[Candidate]] = []
    gap: list[Candidate] = []
    size = max(1, min(FIRST_CHUNK_KEYFRAMES, chunk_keyframes))
    emitted = 0
    for candidate in candidates:
        if candidate.index % keyframe_every:
            gap.append(candidate)
            continue
        keys.append(candidate)
        between.append(gap)
        gap = []
        if len(keys) == size:
            yield Chunk(keys, between)
            emitted += 1
            keys, between = [], []
            size = size if emitted < 2 else min(2 * size, max(1, chunk_keyframes))
    if gap:  # the final candidate is a keyframe: the tail is interpolated, never extrapolated
        keys.append(gap.pop())
        between.append(gap)
    if keys:
        yield Chunk(keys, between)


def bent(a: tuple[int, np.ndarray | None] | None, b: tuple[int, np.ndarray | None] | None,
         c: tuple[int, np.ndarray | None] | None, motion: float) -> bool:
    """Whether keyframe c leaves the straight line through keyframes a and b by more than `motion` of
    the face height (any edge). Unknown (a missing keyframe or face) counts as bent."""
    if a is None or b is None or c is None or a[1] is None or b[1] is None or c[1] is None:
        return True
    (ia, ba), (ib, bb), (ic, bc) = a, b, c
    predicted = bb + (bb - ba) * ((ic - ib) / (ib - ia))
    height = max(float(bb[3] - bb[1]), float(bc[3] - bc[1]), 1.0)
    return float(np.abs(bc - predicted).max()) > motion * height


def coarse_to_fine(candidates: Iterable[Candidate], detect: DetectFn, detect_ahead: DetectAheadFn, follower: FaceFollower,
                   keyframe_every: int, motion: float, chunk_keyframes: int) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, faces) for every frame detected, in frame order.

    Keyframes go through `detect_ahead` (later chunks' requests run while this one is refined);
    refinements through `detect`. `follower` decides which face is followed for the motion test; it
    is copied, never advanced (the caller follows the ordered results)."""
    trial = copy.deepcopy(follower)
    history: list[tuple[int, np.ndarray | None]] = []  # the last two keyframes already handed out
    pending = None  # a chunk waits for the next chunk's first keyframe: it tells whether its last interval bends
    for chunk, key_faces in detect_ahead(chunks(candidates, keyframe_every, chunk_keyframes)):
        ends = [(key.index, trial.next(faces, key.index)) for key, faces in zip(chunk.keys, key_faces)]
        if pending is not None:
            history = yield from _refine(*pending, history, ends[0], detect, trial, motion)
        pending = (chunk, key_faces, ends)
    if pending is not None:
        yield from _refine(*pending, history, None, detect, trial, motion)


def _refine(chunk: Chunk, key_faces: list[np.ndarray], ends: list[tuple[int, np.ndarray | None]],
            history: list[tuple[int, np.ndarray | None]], after: tuple[int, np.ndarray | None] | None, detect: DetectFn,
            trial: FaceFollower, motion: float):
    """Refine one chunk's intervals where the face moved other than in a straight line, yield its
    results in frame order; returns the last two keyframes (index, followed box). `ends` are the
    chunk's keyframes with their followed boxes, `after` the next keyframe (None at the end)."""
    found = {key.index: faces for key, faces in zip(chunk.keys, key_faces)}
    track = [*history[-2:], *ends, after]
    offset = len(history[-2:])  # track[offset + i] is ends[i]
    work = []
    for i, inner in enumerate(chunk.between):
        k = offset + i
        start, end = (track[k - 1] if k >= 1 else None), track[k]
        if not inner or start is None or not moved(start[1], end[1], motion):
            continue
        before = track[k - 2] if k >= 2 else None
        # On a straight path (a drift, a slow zoom) interpolation is exact: look closer only where
        # the path through the neighbouring keyframes bends (or where a neighbour is unknown).
        if bent(before, start, end, motion) or bent(start, end, track[k + 1], motion):
            work.append((start, end, inner))
    while work:  # one detector round per level of halving
        middles = [inner[len(inner) // 2] for _, _, inner in work]
        refined = []
        for (s, e, inner), middle, faces in zip(work, middles, detect(middles)):
            found[middle.index] = faces
            reference = s[1] if s[1] is not None else e[1]
            m = (middle.index, trial.match(faces, reference))
            half = len(inner) // 2
            left, right = inner[:half], inner[half + 1:]
            if left and moved(s[1], m[1], motion):
                refined.append((s, m, left))
            if right and moved(m[1], e[1], motion):
                refined.append((m, e, right))
        work = refined
    yield from sorted(found.items(), key=lambda item: item[0])
    return [*history, *ends][-2:]
