"""`lipsync batch`: a manifest to completion, killed and resumed, with a bad item."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

from lipsync_triton.preprocessing.media_probe import probe_media


def batch(manifest, out, triton, *extra, wait=True):
    cmd = [sys.executable, "-m", "lipsync_triton.cli", "batch", "--manifest", str(manifest), "--out", str(out),
           "--url", triton.grpc_url, "--concurrency", "1", *extra]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_a_killed_batch_resumes_and_the_exit_status_tells_the_outcome(triton, media, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(media["clip"], inputs / "presenter.mp4")
    shutil.copy(media["speech"], inputs / "speech.wav")
    manifest = inputs / "jobs.csv"
    manifest.write_text("face,audio,name,pads\n" + "".join(f"presenter.mp4,speech.wav,take{i},0 20 0 0\n" for i in range(3)))
    out = tmp_path / "out"
    run = batch(manifest, out, triton, wait=False)
    deadline = time.monotonic() + 300
    while not (out / "status" / "00000.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    run.kill()  # a crash: no clean-up, no summary
    run.wait()
    finished_before = sorted(p.name for p in (out / "status").glob("*.json"))
    assert finished_before and len(finished_before) < 3

    done = batch(manifest, out, triton)
    assert done.returncode == 0, done.stderr
    assert f"({len(finished_before)} from an earlier run)" in done.stderr
    for i in range(3):
        status = json.loads((out / "status" / f"{i:05d}.json").read_text())
        assert status["status"] == "succeeded" and status["result"] == f"take{i}.mp4"
        assert probe_media(out / f"take{i}.mp4").frames == status["frames"]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["take0.mp4", "take1.mp4", "take2.mp4"]

    # A bad item fails alone; the exit status says not everything succeeded.
    (inputs / "notes.mp4").write_text("not a video")
    manifest.write_text(manifest.read_text() + "notes.mp4,speech.wav,broken,\n")
    again = batch(manifest, out, triton)
    assert again.returncode == 1 and "3 of 4 succeeded (3 from an earlier run), 1 failed" in again.stderr
    broken = json.loads((out / "status" / "00003.json").read_text())
    assert broken["status"] == "failed" and "notes.mp4" in broken["error"]


def test_a_bad_manifest_is_a_one_line_error(triton, tmp_path):
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("video,speech\na.mp4,b.wav\n")
    done = batch(manifest, tmp_path / "out", triton)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error:")
    assert "face and audio columns" in done.stderr
