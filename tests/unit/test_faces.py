"""Face-box post-processing: candidates, choice among several faces, gaps, smoothing, pads."""
import cv2
import numpy as np
import pytest

from lipsync_triton.errors import LipsyncError
from lipsync_triton.preprocessing.crops import lower_face_mask, paste_face
from lipsync_triton.preprocessing.faces import FaceSelector, Letterbox, faces_from_candidates, fill_missing, nms, pad_and_clip, smooth

FACES = np.array([[10, 10, 50, 60, 0.9], [100, 20, 200, 140, 0.8], [300, 30, 330, 70, 0.95]], np.float32)


def test_threshold_nms_and_rescale():
    scores = np.array([0.9, 0.85, 0.4, 0.0], np.float32)
    boxes = np.array([[10, 10, 50, 50], [12, 11, 52, 49], [100, 100, 120, 120], [0, 0, 1, 1]], np.float32)
    faces = faces_from_candidates(scores, boxes, scale=0.5)
    assert faces.shape == (1, 5)
    assert np.allclose(faces[0, :4], [20, 20, 100, 100])


def test_nms_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    assert sorted(nms(boxes, np.array([0.5, 0.9]))) == [0, 1]


@pytest.mark.parametrize("spec, expected", [("largest", 1), ("index:0", 0), ("index:2", 2), ("point:320,50", 2), ("point:150,90", 1)])
def test_face_selection(spec, expected):
    chosen = FaceSelector.parse(spec).choose(FACES)
    assert np.array_equal(chosen, FACES[expected, :4])


def test_bad_face_selection_is_explained():
    with pytest.raises(LipsyncError, match="index:N"):
        FaceSelector.parse("biggest")


def test_frames_without_face_reuse_the_nearest_box():
    a, b = np.array([0, 0, 10, 10.0]), np.array([50, 50, 60, 60.0])
    boxes, filled = fill_missing([None, a, None, None, None, b, None])
    assert filled == 5
    assert np.array_equal(boxes[0], a) and np.array_equal(boxes[2], a) and np.array_equal(boxes[4], b) and np.array_equal(boxes[6], b)


def test_no_face_anywhere_fails_clearly():
    with pytest.raises(LipsyncError, match="no face found in any frame"):
        fill_missing([None, None])


def test_smoothing_is_the_forward_moving_mean():
    boxes = np.arange(8, dtype=np.float32)[:, None].repeat(4, 1)
    out = smooth(boxes, 5)
    assert out[0, 0] == 2.0 and out[3, 0] == 5.0 and out[7, 0] == 5.0


def test_pads_and_clipping():
    out = pad_and_clip(np.array([[5, 5, 95, 80]], np.float32), (0, 10, 10, 0), width=100, height=85)
    assert out.tolist() == [[0, 5, 95, 85]]


def test_letterbox_keeps_aspect_and_pads():
    canvas, scale = Letterbox(384, 640).apply(np.full((720, 1280, 3), 200, np.uint8))
    assert scale == 0.5 and canvas.shape == (384, 640, 3)
    assert canvas[359, 639, 0] == 200 and canvas[360:, :].max() == 0


def test_soft_paste_keeps_box_edges_and_changes_mouth():
    frame = np.full((200, 200, 3), 100, np.uint8)
    hard = frame.copy()
    box = np.array([50, 50, 150, 150])
    generated = np.full((96, 96, 3), 250, np.uint8)
    paste_face(frame, box, generated, blend=True)
    paste_face(hard, box, generated, blend=False)
    assert frame[130, 100, 0] > 200  # mouth region replaced
    assert frame[52, 52, 0] == 100 and frame[60, 100, 0] == 100  # upper face and box corners untouched
    assert hard[52, 52, 0] == 250  # the reference's hard box
    mask = lower_face_mask(100, 100)
    assert mask.max() <= 1.0 and mask[0].max() < 0.01 and mask[-1].max() < 0.5


def test_progress_bar_draws_on_a_terminal_only_and_ends_clean():
    import io

    from lipsync_triton.client.progress import ProgressBar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = ProgressBar(stream=stream)
        for done in (0, 5, 10):
            bar(done, 10)
    last = tty.getvalue().split("\r")[-1]
    assert "10/10" in last and "frame/s" in last and last.endswith("\n")
    assert "1000000" not in tty.getvalue()  # no absurd rate from the first update
    assert pipe.getvalue() == ""
    early = Tty()
    detect = ProgressBar("detect faces", stream=early)
    detect(65, 230)  # detection stops once the frames the speech needs are done
    detect.close()
    assert "65/65" in early.getvalue().split("\r")[-1]  # ends full, not stuck at 65/230


def test_index_selection_follows_one_person_when_their_detection_drops():
    from lipsync_triton.preprocessing.faces import FaceFollower

    left, right = [10, 10, 50, 60, 0.9], [100, 10, 140, 60, 0.9]
    follower = FaceFollower(FaceSelector.parse("index:0"))
    assert np.array_equal(follower.next(np.array([left, right], np.float32)), left[:4])
    # The left person is missed in this frame: index:0 would now name the right one. Follow instead.
    assert follower.next(np.array([right], np.float32)) is None
    moved = [14, 12, 54, 62, 0.9]
    assert np.array_equal(follower.next(np.array([right, moved], np.float32)), moved[:4])


def test_point_selection_follows_one_person_over_time():
    from lipsync_triton.preprocessing.faces import FaceFollower

    a, b = [10, 10, 50, 60, 0.9], [60, 10, 100, 60, 0.9]
    follower = FaceFollower(FaceSelector.parse("point:30,30"))
    chosen = [follower.next(np.array(faces, np.float32)) for faces in ([a, b], [b], [b], [a, b])]
    assert np.array_equal(chosen[0], a[:4]) and chosen[1] is None and chosen[2] is None and np.array_equal(chosen[3], a[:4])
    boxes, filled = fill_missing(chosen)
    assert filled == 2 and (boxes[:, 0] < 55).all()  # gaps reuse the same person: smoothing never mixes two


def test_crops_use_the_reference_bilinear_resize():
    from lipsync_triton.preprocessing.crops import crop_face

    frame = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    box = np.array([40, 30, 260, 270])
    expected = cv2.resize(frame[30:270, 40:260], (96, 96))  # inference.py: cv2.resize's default (bilinear)
    assert np.array_equal(crop_face(frame, box), expected)


def test_blend_weight_covers_mouth_chin_and_jaw_not_the_upper_face():
    h, w = 240, 200
    mask = lower_face_mask(h, w)[:, :, 0]

    def region(y0, y1, x0, x1):
        return mask[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)]

    assert region(0.62, 0.8, 0.35, 0.65).min() >= 0.9  # mouth
    assert region(0.82, 0.92, 0.3, 0.7).min() >= 0.75  # chin band
    assert region(0.55, 0.85, 0.04, 0.12).min() >= 0.5 and region(0.55, 0.85, 0.88, 0.96).min() >= 0.5  # jaw sides
    assert region(0.0, 0.4, 0.0, 1.0).max() <= 0.1  # upper 40%: nose and eyes stay the original
    assert mask[-1].max() < 0.5 and mask[:, 0].max() < 0.5  # feathered at the box edges


def test_streamed_boxes_are_final_as_soon_as_given_and_equal_the_whole_video_computation():
    """Generation takes each box while detection still runs: a box handed out early must be exactly
    what gap filling + smoothing over the finished video gives (random gaps, strides, smoothing)."""
    from lipsync_triton.client.box_stream import DetectionLog, StreamedBoxes
    from lipsync_triton.client.face_tracking import TrackingSpec, boxes_from_detections
    from lipsync_triton.preprocessing.video import FrameTransform

    rng = np.random.default_rng(0)
    early = 0
    for _ in range(200):
        n, step = int(rng.integers(1, 40)), int(rng.integers(1, 4))
        truth = rng.uniform(0, 300, (n, 4)).astype(np.float32)
        truth[:, 2:] += 50
        miss = rng.random(n) < rng.choice([0.0, 0.3, 0.7])
        detected = sorted(set(range(0, n, step)) | {n - 1})  # the final frame is always detected
        if all(miss[i] for i in detected):
            miss[detected[0]] = False  # at least one face
        smooth = bool(rng.integers(0, 2))
        spec = TrackingSpec("d", (384, 640), FrameTransform(), False, "largest", (0, 10, 0, 0), smooth, detect_every=step)
        log = DetectionLog()
        stream = StreamedBoxes(log, 5 if smooth else 1, spec.pads, 400, 400, "clip")
        given = {}
        for i in detected:
            log.add(i, None if miss[i] else truth[i])
            for k in set(range(n)) - set(given):
                box = stream._determined(k)
                if box is not None:
                    given[k] = box
        early += len(given)
        log.finish()
        final = boxes_from_detections(log.raw(), spec, 400, 400, "clip")[0]
        for k in range(n):
            np.testing.assert_array_equal(given.get(k, stream.box(k)), final[k])
        # interpolation: a skipped frame between two faces lies on the line between them
        for a, b in zip(detected[:-1], detected[1:]):
            if b - a > 1 and not miss[a] and not miss[b]:
                np.testing.assert_allclose(log.raw()[a + 1], truth[a] + (truth[b] - truth[a]) / (b - a), rtol=1e-5)
    assert early > 1000  # most boxes are handed out before detection ends


def test_streamed_boxes_without_any_face_fail_with_the_one_line_error():
    from lipsync_triton.client.box_stream import DetectionLog, StreamedBoxes

    log = DetectionLog()
    for i in range(6):
        log.add(i, None)
    stream = StreamedBoxes(log, 5, (0, 10, 0, 0), 400, 400, "clip.mp4")
    assert stream._determined(0) is None  # a face may still come
    log.finish()
    with pytest.raises(LipsyncError, match="no face found in any frame of clip.mp4"):
        stream.box(0)
