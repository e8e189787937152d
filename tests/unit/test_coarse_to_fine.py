"""Keyframe-first face detection (client/coarse_to_fine.py), against a scripted detector."""
from __future__ import annotations

import numpy as np
import pytest

from lipsync_triton.client.box_stream import DetectionLog
from lipsync_triton.client.coarse_to_fine import Candidate, bent, coarse_to_fine, moved
from lipsync_triton.preprocessing.faces import FaceFollower, FaceSelector

FACE = np.array([100, 80, 220, 240], np.float32)  # 160 px tall: 6% is 9.6 px
MOTION = 0.06


def _faces(box: np.ndarray | None) -> np.ndarray:
    return np.zeros((0, 5), np.float32) if box is None else np.append(box, 0.9)[None].astype(np.float32)


def _run(truth: list, step: int, keyframe_every: int, chunk: int = 4, motion: float = MOTION):
    """Raw boxes as the job's DetectionLog holds them, and the frames the detector saw."""
    n = len(truth)
    seen: list[int] = []

    def detect(batch: list[Candidate]) -> list[np.ndarray]:
        assert len(batch) <= max(chunk, 2) * keyframe_every // step  # bounded by one chunk's candidates
        seen.extend(c.index for c in batch)
        return [_faces(truth[c.index]) for c in batch]

    candidates = (Candidate(i, np.zeros(1), 1.0) for i in sorted(set(range(0, n, step)) | {n - 1}))
    follower = FaceFollower(FaceSelector.parse("largest"))
    log = DetectionLog()
    order = []
    def detect_ahead(chunks):
        return ((c, detect(c.keys)) for c in chunks)

    for index, faces in coarse_to_fine(candidates, detect, detect_ahead, follower, keyframe_every, motion, chunk):
        order.append(index)
        log.add(index, follower.next(faces, index))
    assert order == sorted(set(order)) == sorted(seen)  # each detected frame once, handed out in frame order
    return log.raw(), seen


def test_a_still_face_is_detected_on_keyframes_only():
    raw, seen = _run([FACE] * 100, step=2, keyframe_every=8)
    assert seen == sorted(set(range(0, 100, 8)) | {99})
    np.testing.assert_array_equal(raw, np.tile(FACE, (100, 1)))


@pytest.mark.parametrize("step,keyframe_every", [(1, 8), (2, 8), (2, 6), (3, 12), (2, 2)])
def test_jumps_and_gaps_give_exactly_what_detecting_every_candidate_gives(step, keyframe_every):
    """Piecewise-still presenters (one person jumping, missed by the detector and found again, for at
    least a keyframe interval each): refinement finds every change down to the candidate stride, so
    the raw boxes are those of detecting every candidate, with far fewer detections."""
    rng = np.random.default_rng(step * 100 + keyframe_every)
    saved = 0
    for _ in range(40):
        truth: list = []
        while len(truth) < 150:
            box = None if rng.random() < 0.2 else FACE + np.tile(rng.integers(-2, 3, 2) * 12, 2)  # moves of 12+ px; IoU > 0.2
            truth += [box] * int(rng.integers(keyframe_every, 3 * keyframe_every))
        if all(b is None for b in truth):
            truth[0] = FACE
        fine, everything = _run(truth, step, step)
        coarse, seen = _run(truth, step, keyframe_every)
        np.testing.assert_array_equal(coarse, fine)
        saved += len(everything) - len(seen)
    assert saved > 0 or keyframe_every == step


def test_a_straight_drift_is_interpolated_without_refinement():
    n = 97
    truth = [FACE + np.float32(2 * i) * np.array([1, 0, 1, 0], np.float32) for i in range(n)]  # 16 px per interval
    raw, seen = _run(truth, step=2, keyframe_every=8)
    keyframes = set(range(0, n, 8)) | {n - 1}
    # Only the first and the last interval are halved: no keyframe beyond them shows the path is straight.
    extra = set(seen) - keyframes
    assert keyframes <= set(seen) and len(extra) <= 4 and all(i < 8 or i > 88 for i in extra)
    np.testing.assert_allclose(raw, np.stack(truth), atol=1e-4)  # linear: interpolation is exact


def test_a_fast_move_is_refined_and_the_error_stays_below_the_motion_threshold():
    n, motion = 80, MOTION
    x = np.concatenate([np.zeros(30), np.linspace(0, 40, 6), np.full(n - 36, 40.0)])  # a quick 40 px lean
    truth = [FACE + np.float32(v) * np.array([1, 0, 1, 0], np.float32) for v in x]
    raw, seen = _run(truth, step=1, keyframe_every=8, motion=motion)
    assert len(set(seen) & set(range(25, 40)) - {32}) >= 3  # the move is looked at between the keyframes
    height = FACE[3] - FACE[1]
    assert np.abs(raw - np.stack(truth)).max() <= motion * height


def test_moved_and_bent():
    assert not moved(None, None, MOTION)
    assert moved(None, FACE, MOTION) and moved(FACE, None, MOTION)
    assert not moved(FACE, FACE + [9, 0, 9, 0], MOTION)  # 9 px of 160: detector jitter
    assert moved(FACE, FACE + [0, 0, 0, 11], MOTION)  # the chin moved 11 px
    right = np.array([16, 0, 16, 0], np.float32)
    assert not bent((0, FACE), (8, FACE + right), (16, FACE + 2 * right), MOTION)  # a straight drift
    assert not bent((0, FACE), (8, FACE + right), (12, FACE + 1.5 * right), MOTION)  # unequal spacing (the last keyframe)
    assert bent((0, FACE), (8, FACE + right), (16, FACE + right), MOTION)  # stopped
    assert bent(None, (8, FACE), (16, FACE), MOTION) and bent((0, None), (8, FACE), (16, FACE), MOTION)  # unknown
