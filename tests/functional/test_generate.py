"""End to end through the real server: presenter clip or photo + speech -> lip-synced mp4."""
import re
import json
import subprocess
import threading

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from lipsync_triton.client.face_tracking import TrackingSpec, boxes_from_detections
from lipsync_triton.client.generate import LipSyncClient
from lipsync_triton.client.presenter_cache import PresenterCache
from lipsync_triton.client.mp4_writer import Mp4Writer
from lipsync_triton.client.triton_client import Cancelled
from lipsync_triton.preprocessing.media_probe import probe_media
from lipsync_triton.preprocessing.video import FrameTransform
from lipsync_triton.samples import astronaut_bgr, presenter_frames

from conftest import ROOT, decode_frames

LIPSYNC = str(ROOT / ".venv" / "bin" / "lipsync")


def run_cli(*args):
    return subprocess.run([LIPSYNC, *map(str, args)], capture_output=True, text=True, timeout=600)


def generate_cli(triton, face, audio, outfile, *extra):
    proc = run_cli("generate", "--face", face, "--audio", audio, "--outfile", outfile, "--url", triton.grpc_url, "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def detector_count(triton):
    stats = grpcclient.InferenceServerClient(triton.grpc_url).get_inference_statistics("face_detector", as_json=True)
    return int(stats["model_stats"][0].get("inference_count", 0))


def only_cached_boxes(cache_dir, width=640, height=360):
    """The boxes a job used, rebuilt from its presenter-cache entry (default pads and smoothing)."""
    files = list(cache_dir.glob("*.npz"))
    assert len(files) == 1
    entry = PresenterCache(cache_dir).load(files[0].stem)
    spec = TrackingSpec("any", (384, 640), FrameTransform(), False, "largest", (0, 10, 0, 0), True)
    return boxes_from_detections(entry.raw, spec, width, height, "clip")[0]


@pytest.fixture(scope="module")
def e2e(triton, media, tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    out = d / "result.mp4"
    summary = generate_cli(triton, media["clip"], media["speech"], out, "--cache-dir", d / "cache")
    return {"out": out, "summary": summary, "boxes": only_cached_boxes(d / "cache"), "cache": d / "cache"}


def test_output_follows_the_audio_and_keeps_resolution_and_fps(e2e, media):
    info, audio = probe_media(e2e["out"]), probe_media(media["speech"])
    assert (info.width, info.height) == (640, 360)
    assert abs(info.fps - 25.0) < 1e-3
    assert info.has_audio
    # The VIDEO stream (not the container, whose duration is the audio's) follows the speech.
    assert info.frames == e2e["summary"]["frames"] == len(decode_frames(e2e["out"]))
    assert abs(info.video_duration - audio.duration) <= 0.25  # one 0.2 s mel window + one frame
    assert abs(info.video_duration - info.frames / 25.0) < 0.05


def test_only_the_mouth_changes(e2e, media):
    source = decode_frames(media["clip"])
    output = decode_frames(e2e["out"], limit=len(source))
    boxes = e2e["boxes"]
    outside_diffs, mouth_diffs = [], []
    for i in range(0, len(source), 7):
        x1, y1, x2, y2 = boxes[i]
        diff = np.abs(output[i].astype(np.int16) - source[i].astype(np.int16)).mean(axis=2)
        outside = np.ones(diff.shape, bool)
        outside[max(0, y1 - 4):y2 + 4, max(0, x1 - 4):x2 + 4] = False
        outside_diffs.append(diff[outside].mean())
        h, w = y2 - y1, x2 - x1
        mouth_diffs.append(diff[y1 + int(0.6 * h):y1 + int(0.8 * h), x1 + int(0.35 * w):x1 + int(0.65 * w)].mean())
    assert max(outside_diffs) < 2.5, outside_diffs  # only re-encoding noise
    assert min(mouth_diffs) > 8.0, mouth_diffs


def test_short_video_loops_under_longer_audio(e2e, media):
    source = decode_frames(media["clip"])
    n = len(source)
    output = decode_frames(e2e["out"])
    assert len(output) > n + 5, "the test speech must outlast the clip"
    boxes = e2e["boxes"]
    x1, y1, x2, y2 = boxes[0]
    top = slice(0, max(1, y1 - 4))
    looped = np.abs(output[n].astype(np.int16) - source[0].astype(np.int16))[top].mean()
    not_looped = np.abs(output[n].astype(np.int16) - source[n - 1].astype(np.int16))[top].mean()
    assert looped < 4.0 and looped < 0.5 * not_looped, (looped, not_looped)  # re-encoding noise vs another frame


def test_presenter_cache_hit_skips_detection(triton, media, e2e, tmp_path):
    before = detector_count(triton)
    summary = generate_cli(triton, media["clip"], media["speech"], tmp_path / "again.mp4", "--cache-dir", e2e["cache"])
    assert summary["cache_hit"] is True and summary["detector_requests"] == 0
    assert detector_count(triton) == before
    summary = generate_cli(triton, media["clip"], media["speech"], tmp_path / "nocache.mp4", "--cache-dir", e2e["cache"], "--no-cache")
    assert summary["cache_hit"] is False and detector_count(triton) > before


def test_still_image(triton, media, tmp_path):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), astronaut_bgr())
    out = tmp_path / "photo.mp4"
    summary = generate_cli(triton, photo, media["speech"], out, "--fps", "20", "--no-cache")
    info = probe_media(out)
    assert (info.width, info.height) == (512, 512) and abs(info.fps - 20) < 1e-3
    assert info.frames == summary["frames"] == len(decode_frames(out))
    # as long as the speech (the last frame held past the reference's last window), to one frame
    assert abs(info.video_duration - probe_media(media["speech"]).duration) <= 1 / 20 + 1e-3
    assert summary["frames_without_face"] == 0


def test_frames_without_a_face_reuse_the_nearest_box(triton, media, tmp_path):
    clip = tmp_path / "gap.mp4"
    writer = Mp4Writer(clip, 640, 360, 25, None)
    for i, frame in enumerate(presenter_frames(2.0, 25, 640, 360)):
        writer.write(np.full_like(frame, 90) if 10 <= i < 20 else frame)
    writer.close()
    summary = generate_cli(triton, clip, media["speech"], tmp_path / "gap_out.mp4", "--no-cache", "--detect-every", "1")
    assert summary["frames_without_face"] == 10
    assert (tmp_path / "gap_out.mp4").is_file()
    # Every 2nd frame: frame 9 lies between a face (8) and none (10), so it is filled too.
    summary = generate_cli(triton, clip, media["speech"], tmp_path / "gap_out2.mp4", "--no-cache", "--detect-every", "2")
    assert summary["frames_without_face"] == 11


def test_python_api_with_progress_and_cancellation(triton, media, tmp_path):
    seen = []
    client = LipSyncClient([triton.grpc_url], cache_dir=tmp_path / "cache")
    result = client.generate(media["clip"], media["speech"], tmp_path / "api.mp4", progress=lambda d, t: seen.append((d, t)))
    assert result.frames == seen[-1][0] == seen[-1][1] and (tmp_path / "api.mp4").is_file()
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    cancel = threading.Event()

    def stop_early(done, total):
        if done >= 16:
            cancel.set()

    with pytest.raises(Cancelled):
        client.generate(media["clip"], media["speech"], tmp_path / "cancelled.mp4", progress=stop_early, cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.mp4", "cache"]


def _noise_clip(path):
    writer = Mp4Writer(path, 320, 192, 25, None)
    rng = np.random.default_rng(0)
    for _ in range(10):
        writer.write(rng.integers(0, 256, (192, 320, 3), dtype=np.uint8))
    return writer.close()


@pytest.fixture(scope="module")
def bad_inputs(media, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    text_mp4 = d / "notes.mp4"
    text_mp4.write_text("hello, I am a text file")
    truncated = d / "truncated.mp4"
    truncated.write_bytes(media["clip"].read_bytes()[:20000])
    empty_wav = d / "empty.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", str(empty_wav)], check=True)
    return {"text_mp4": text_mp4, "truncated": truncated, "empty_wav": empty_wav, "noise": _noise_clip(d / "noise.mp4"), "dir": d}


@pytest.mark.parametrize("case, expect", [
    ("missing_face", "file not found"),
    ("missing_audio", "file not found"),
    ("text_as_mp4", "not a readable media file"),
    ("truncated_video", "truncated"),
    ("audio_without_stream", "no audio stream"),
    ("zero_length_audio", "no audio samples"),
    ("no_face_anywhere", "no face found in any frame"),
    ("unreachable_server", "cannot reach Triton at 127.0.0.1:1"),
    ("bad_face_select", "--face-select"),
])
def test_errors_are_one_line_with_no_output(triton, media, bad_inputs, tmp_path, case, expect):
    face, audio, url = media["clip"], media["speech"], triton.grpc_url
    extra = ["--no-cache"]
    if case == "missing_face":
        face = tmp_path / "nope.mp4"
    elif case == "missing_audio":
        audio = tmp_path / "nope.wav"
    elif case == "text_as_mp4":
        face = bad_inputs["text_mp4"]
    elif case == "truncated_video":
        face = bad_inputs["truncated"]
    elif case == "audio_without_stream":
        audio = media["clip"]
    elif case == "zero_length_audio":
        audio = bad_inputs["empty_wav"]
    elif case == "no_face_anywhere":
        face = bad_inputs["noise"]
    elif case == "unreachable_server":
        url = "127.0.0.1:1"
    elif case == "bad_face_select":
        extra += ["--face-select", "biggest"]
    out = tmp_path / "out" / "result.mp4"
    proc = run_cli("generate", "--face", face, "--audio", audio, "--outfile", out, "--url", url, "--quiet", *extra)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], proc.stderr
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_fixed_box_and_resize_factor_skip_detection(triton, media, tmp_path):
    before = detector_count(triton)
    out = tmp_path / "boxed.mp4"
    summary = generate_cli(triton, media["clip"], media["speech"], out, "--resize-factor", "2", "--box", "20", "120", "110", "210")
    info = probe_media(out)
    assert (info.width, info.height) == (320, 180)
    assert summary["detector_requests"] == 0 and detector_count(triton) == before
    proc = run_cli("generate", "--face", media["clip"], "--audio", media["speech"], "--outfile", tmp_path / "bad.mp4",
                   "--url", triton.grpc_url, "--quiet", "--box", "0", "500", "0", "500")
    assert proc.returncode != 0 and "lies outside" in proc.stderr and not (tmp_path / "bad.mp4").exists()


def test_soft_paste_replaces_the_generated_lower_face_and_keeps_the_upper(triton, media, tmp_path):
    """Blend weight measured on real outputs: (soft - original) / (hard - original) per region of a fixed box."""
    photo = tmp_path / "astronaut.png"
    original = astronaut_bgr()
    cv2.imwrite(str(photo), original)
    top, bottom, left, right = 60, 300, 150, 350
    frames = {}
    for mode, extra in (("soft", []), ("hard", ["--hard-paste"])):
        out = tmp_path / f"{mode}.mp4"
        generate_cli(triton, photo, media["speech"], out, "--box", top, bottom, left, right, *extra)
        frames[mode] = decode_frames(out, limit=1)[0].astype(np.float32)
    h, w = bottom - top, right - left

    def weight(y0, y1, x0, x1):
        ys, xs = slice(top + int(y0 * h), top + int(y1 * h)), slice(left + int(x0 * w), left + int(x1 * w))
        base = original[ys, xs].astype(np.float32)
        return np.abs(frames["soft"][ys, xs] - base).mean() / np.abs(frames["hard"][ys, xs] - base).mean()

    assert weight(0.62, 0.8, 0.35, 0.65) >= 0.9  # mouth
    assert weight(0.82, 0.92, 0.3, 0.7) >= 0.75  # chin
    assert weight(0.55, 0.85, 0.04, 0.12) >= 0.5 and weight(0.55, 0.85, 0.88, 0.96) >= 0.5  # jaw sides
    assert weight(0.0, 0.4, 0.0, 1.0) <= 0.1  # upper 40% of the box


def test_only_the_frames_the_audio_uses_are_detected(triton, media, tmp_path):
    clip = tmp_path / "long_presenter.mp4"
    from lipsync_triton.samples import write_presenter_clip, write_speech

    write_presenter_clip(clip, 8.0, fps=25, width=320, height=192)  # 200 frames
    speech = write_speech(tmp_path / "short.wav", "Hi.")
    frames_used = int(probe_media(speech).duration * 25) + 1
    assert frames_used < 60
    cache = tmp_path / "cache"
    before = detector_count(triton)
    summary = generate_cli(triton, clip, speech, tmp_path / "a.mp4", "--cache-dir", cache)
    detected = detector_count(triton) - before
    assert summary["cache_hit"] is False and detected <= summary["frames"] + 4  # + the smoothing look-ahead
    # The same speech again: the stored prefix covers it.
    assert generate_cli(triton, clip, speech, tmp_path / "b.mp4", "--cache-dir", cache)["cache_hit"] is True
    # Filling the cache on purpose detects the whole video: every 8th frame and the last one, and
    # every 2nd frame only where the (slowly drifting) face moved; any later speech then hits.
    before = detector_count(triton)
    generate_cli(triton, clip, speech, tmp_path / "c.mp4", "--cache-dir", cache, "--cache-whole-video")
    assert len(set(range(0, 200, 8)) | {199}) <= detector_count(triton) - before < 101
    before = detector_count(triton)  # keyframes off: every 2nd frame and the last one
    generate_cli(triton, clip, speech, tmp_path / "d.mp4", "--no-cache", "--cache-whole-video", "--keyframe-every", "0")
    assert detector_count(triton) - before == 101
    before = detector_count(triton)
    generate_cli(triton, clip, speech, tmp_path / "e.mp4", "--no-cache", "--cache-whole-video", "--detect-every", "1",
                 "--keyframe-every", "0")
    assert detector_count(triton) - before == 200


def test_a_corrupt_cache_entry_is_a_logged_miss_and_is_rewritten(triton, media, e2e, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(e2e["cache"], cache)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])  # half-written
    proc = run_cli("generate", "--face", media["clip"], "--audio", media["speech"], "--outfile", tmp_path / "out.mp4",
                   "--url", triton.grpc_url, "--cache-dir", cache)
    assert proc.returncode == 0, proc.stderr
    assert "status=corrupt" in proc.stdout and "status=stored" in proc.stdout
    assert np.array_equal(only_cached_boxes(cache), e2e["boxes"])


def test_the_cache_key_names_the_served_detector(triton, exported_repo):
    from lipsync_triton.client.triton_client import TritonPool
    from lipsync_triton.files import file_sha256

    info = TritonPool(triton.grpc_url).check_ready()["face_detector"]
    assert info.identity == file_sha256(exported_repo / "face_detector" / "1" / "model.onnx")
    spec = TrackingSpec(info.identity, (384, 640), FrameTransform(), False, "largest", (0, 10, 0, 0), True)
    other = TrackingSpec("0" * 64, (384, 640), FrameTransform(), False, "largest", (0, 10, 0, 0), True)
    cache = PresenterCache()
    clip = exported_repo / "export.json"  # any file: only the spec differs
    assert cache.key(clip, spec.cache_key_fields()) != cache.key(clip, other.cache_key_fields())


def test_pads_beyond_the_face_box_are_refused_in_one_line(triton, media, tmp_path):
    """A pad larger than the face box it pads (the mouth painted over the chest) fails the job in
    one line naming the bound, and writes nothing."""
    out = tmp_path / "out.mp4"
    proc = run_cli("generate", "--face", media["clip"], "--audio", media["speech"], "--outfile", out, "--url", triton.grpc_url,
                   "--quiet", "--no-cache", "--pads", "0", "900", "0", "0")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert re.match(r"error: --pads: 900 px below the face is outside what the face box allows \(its height is \d+ px\)",
                    line), line
    assert not out.exists()


def test_the_detect_bar_ends_full_when_detection_ends(triton, media, tmp_path):
    """The face-detection pass stops at the frames the speech uses, often before its estimate: its
    last report says so (done == total), so the bar ends at 100% then, not stuck at 88% until the
    end of the job."""
    calls = []
    LipSyncClient([triton.grpc_url]).generate(media["clip"], media["speech"], tmp_path / "out.mp4", use_cache=False,
                                              detect_progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1] == max(done for done, _ in calls), calls[-3:]


def test_silent_speech_succeeds_with_a_warning_on_the_cli_and_in_the_job(triton, media, tmp_path):
    """Silence lip-syncs to a still mouth: not an error, but never without a word."""
    silent = tmp_path / "silent.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "2", str(silent)],
                   check=True)
    proc = run_cli("generate", "--face", media["clip"], "--audio", silent, "--outfile", tmp_path / "out.mp4",
                   "--url", triton.grpc_url, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "the speech is silent" in proc.stdout + proc.stderr
    summary = generate_cli(triton, media["clip"], silent, tmp_path / "out2.mp4")
    assert summary["warnings"] and "silent" in summary["warnings"][0]
    assert generate_cli(triton, media["clip"], media["speech"], tmp_path / "out3.mp4")["warnings"] == []
