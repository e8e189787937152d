"""Frames kept in I420 from decoder to encoder: the face box is the only part converted, pixels
outside the blended area pass through exactly, and the detector's sampled frames are the right ones."""
import subprocess

import cv2
import numpy as np
import pytest

from lipsync_triton.client.mp4_writer import DEFAULT_X264_PARAMS, Mp4Writer
from lipsync_triton.preprocessing import i420
from lipsync_triton.preprocessing.crops import crop_face, crop_face_i420, lower_face_mask, paste_face, paste_face_i420
from lipsync_triton.preprocessing.faces import Letterbox
from lipsync_triton.preprocessing.video import FrameSource, FrameTransform
from lipsync_triton.samples import presenter_frames

RNG = np.random.default_rng(7)


def textured_i420(width: int = 320, height: int = 240) -> np.ndarray:
    bgr = cv2.GaussianBlur(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 1.5)
    return i420.from_bgr(bgr)


@pytest.mark.parametrize("box", [(40, 30, 200, 210), (41, 31, 199, 211), (0, 0, 320, 240)])
def test_face_crop_equals_the_crop_of_the_whole_converted_frame(box):
    frame = textured_i420()
    assert np.array_equal(crop_face_i420(frame, np.array(box)), crop_face(i420.to_bgr(frame), np.array(box)))


@pytest.mark.parametrize("blend", [True, False])
def test_paste_changes_only_the_lower_face_and_matches_the_bgr_paste(blend):
    frame = textured_i420()
    before = frame.copy()
    box = np.array([61, 41, 181, 201])  # odd corners: widened to even by one pixel
    # A generated face is smooth at the chroma scale (unlike noise, which 4:2:0 cannot carry).
    generated = cv2.GaussianBlur(RNG.integers(0, 256, (96, 96, 3), dtype=np.uint8), (0, 0), 3)
    paste_face_i420(frame, box, generated, blend=blend)

    y, _, _ = i420.planes(frame)
    y0, _, _ = i420.planes(before)
    changed = np.argwhere(y != y0)
    x1, y1, x2, y2 = i420.even_box(box, 320, 240)
    assert len(changed) > 0
    assert changed[:, 0].min() >= y1 and changed[:, 0].max() < y2 and changed[:, 1].min() >= x1 and changed[:, 1].max() < x2
    if blend:  # the upper face (weight 0 above the half-line ramp) keeps its exact pixels
        assert changed[:, 0].min() >= y1 + int(0.42 * (y2 - y1)) - 1
    # Same picture as the BGR paste on the same widened box, up to chroma subsampling.
    expected = i420.to_bgr(before)
    paste_face(expected, np.array([x1, y1, x2, y2]), generated, blend=blend)
    diff = np.abs(i420.to_bgr(frame).astype(int) - expected.astype(int))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 16


def test_chroma_weight_is_the_mean_of_each_2x2_block():
    alpha = lower_face_mask(40, 30)
    weight = i420.chroma_weight(alpha[:, :, 0])
    assert weight.shape == (20, 15)
    assert np.isclose(weight[10, 7], alpha[20:22, 14:16, 0].mean())


def test_letterbox_from_i420_matches_the_bgr_letterbox():
    frame = i420.from_bgr(next(presenter_frames(0.04, 25, 1280, 720)))
    from_i420, scale = Letterbox(384, 640).apply_i420(frame)
    from_bgr, scale_bgr = Letterbox(384, 640).apply(i420.to_bgr(frame))
    assert scale == scale_bgr == 0.5 and from_i420.shape == (384, 640, 3)
    assert from_i420[360:].max() == 0
    assert np.abs(from_i420.astype(int) - from_bgr.astype(int)).mean() < 2.0


def luma(grey: int) -> int:
    """BT.601 limited-range Y of a grey level."""
    return round(16 + grey * 219 / 255)


@pytest.fixture(scope="module")
def counting_clip(tmp_path_factory):
    """A clip whose frame i is grey level 8*i (i < 30): every frame tells its own index."""
    path = tmp_path_factory.mktemp("i420") / "counting.mp4"
    writer = Mp4Writer(path, 160, 96, 25, None, crf=0)
    for i in range(30):
        writer.write(np.full((96, 160, 3), 8 * i, np.uint8))
    writer.close()
    return path


def test_i420_frames_come_straight_from_the_decoder(counting_clip):
    source = FrameSource(counting_clip, pix_fmt="yuv420p")
    frames = list(f.copy() for f in source.frames(ring=3))
    assert len(frames) == 30 and frames[0].shape == (144, 160)
    for i, frame in enumerate(frames):
        assert abs(int(np.median(i420.planes(frame)[0])) - luma(8 * i)) <= 1


def test_transformed_or_odd_sized_videos_still_give_even_i420_frames(tmp_path):
    odd = tmp_path / "odd.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=161x97:rate=25:duration=0.4",
                    "-c:v", "libx264", "-pix_fmt", "yuv444p", str(odd)], check=True)
    source = FrameSource(odd, pix_fmt="yuv420p")
    assert (source.width, source.height) == (162, 98)
    frame = next(iter(source.frames()))
    assert frame.shape == (147, 162)
    assert i420.planes(frame)[0][:, 161].max() <= 17  # the padding column is black (luma 16)
    rotated = FrameSource(odd, FrameTransform(rotate=True), pix_fmt="yuv420p")
    assert (rotated.width, rotated.height) == (98, 162) and next(iter(rotated.frames())).shape == (243, 98)


@pytest.mark.parametrize("step,limit", [(2, None), (4, 27), (3, 30), (1, 5)])
def test_sampled_frames_are_every_kth_and_the_last_one(counting_clip, step, limit):
    source = FrameSource(counting_clip, pix_fmt="yuv420p")
    got = list(source.sampled_frames((80, 48), (96, 64), step, limit))
    total = limit or 30
    expected = list(range(0, total, step)) + ([total - 1] if (total - 1) % step else [])
    assert [index for index, _ in got] == expected
    for index, image in got:
        assert image.shape == (64, 96, 3) and image[48:].max() == 0 and image[:, 80:].max() == 0
        assert abs(int(np.median(image[:48, :80, 1])) - 8 * index) <= 3


def test_the_encoder_gets_i420_and_the_fast_x264_settings(tmp_path, counting_clip):
    out = tmp_path / "copy.mp4"
    writer = Mp4Writer(out, 160, 96, 25, None, pix_fmt="yuv420p")
    originals = [f.copy() for f in FrameSource(counting_clip, pix_fmt="yuv420p").frames()]
    for frame in originals:
        writer.write(frame)
    writer.close()
    settings = out.read_bytes()  # x264 writes its options into the stream
    for option in DEFAULT_X264_PARAMS.split(":"):
        assert option.encode() in settings, option
    decoded = list(FrameSource(out, pix_fmt="yuv420p").frames())
    assert len(decoded) == 30
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(originals, decoded)) < 2.0
    with pytest.raises(ValueError):
        Mp4Writer(tmp_path / "odd.mp4", 161, 96, 25, None, pix_fmt="yuv420p")
