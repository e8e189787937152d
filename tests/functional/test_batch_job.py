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


def statuses(out) -> dict[str, dict]:
    """The status files by item name (they are named by the item's content digest)."""
    records = [json.loads(p.read_text()) for p in (out / "status").glob("*.json")]
    return {r["name"]: r for r in records}


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
    while not list((out / "status").glob("*.json")) if (out / "status").exists() else True:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    run.kill()  # a crash: no clean-up, no summary
    run.wait()
    finished_before = sorted(p.name for p in (out / "status").glob("*.json"))
    assert finished_before and len(finished_before) < 3

    done = batch(manifest, out, triton)
    assert done.returncode == 0, done.stderr
    assert f"({len(finished_before)} from an earlier run)" in done.stderr
    for i in range(3):
        status = statuses(out)[f"take{i}"]
        assert status["status"] == "succeeded" and status["result"] == f"take{i}.mp4"
        assert probe_media(out / f"take{i}.mp4").frames == status["frames"]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["take0.mp4", "take1.mp4", "take2.mp4"]

    # A bad item fails alone; the exit status says not everything succeeded.
    (inputs / "notes.mp4").write_text("not a video")
    manifest.write_text(manifest.read_text() + "notes.mp4,speech.wav,broken,\n")
    again = batch(manifest, out, triton)
    assert again.returncode == 1 and "3 of 4 succeeded (3 from an earlier run), 1 failed" in again.stderr
    broken = statuses(out)["broken"]
    assert broken["status"] == "failed" and "notes.mp4" in broken["error"]


def test_a_faceless_item_hints_at_the_manifests_box_column(triton, tmp_path):
    """The hint names what a manifest takes (a box column), not the CLI's --box."""
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "wall.png"), np.full((256, 256, 3), 128, np.uint8))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1", "-ar", "16000",
                    str(tmp_path / "s.wav")], check=True)
    (tmp_path / "jobs.csv").write_text("face,audio,name\nwall.png,s.wav,wall\n")
    done = batch(tmp_path / "jobs.csv", tmp_path / "out", triton)
    assert done.returncode == 1, done.stderr
    error = statuses(tmp_path / "out")["wall"]["error"]
    assert "no face found" in error and "a box column" in error and "--box" not in error, error


def test_a_bad_manifest_is_a_one_line_error(triton, tmp_path):
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("video,speech\na.mp4,b.wav\n")
    done = batch(manifest, tmp_path / "out", triton)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error:")
    assert "face and audio columns" in done.stderr


def test_resume_goes_by_content_not_row_and_sigterm_counts_items_cancelled(triton, media, tmp_path):
    """A row inserted at the top is made (not reported done); a changed speech is made again; the
    status files keep describing their own items. SIGTERM: exit 143, unfinished items cancelled."""
    import signal

    from lipsync_triton.samples import write_speech

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(media["clip"], inputs / "presenter.mp4")
    shutil.copy(media["speech"], inputs / "a.wav")
    shutil.copy(media["speech"], inputs / "b.wav")
    manifest = inputs / "jobs.csv"
    manifest.write_text("face,audio,name\npresenter.mp4,a.wav,alpha\npresenter.mp4,b.wav,beta\n")
    out = tmp_path / "out"
    assert batch(manifest, out, triton).returncode == 0
    first = statuses(out)
    write_speech(inputs / "b.wav", "A different sentence, longer than the first one was.")  # beta's speech changes
    manifest.write_text("face,audio,name\npresenter.mp4,a.wav,new\npresenter.mp4,a.wav,alpha\npresenter.mp4,b.wav,beta\n")
    again = batch(manifest, out, triton)
    assert again.returncode == 0 and "3 of 3 succeeded (1 from an earlier run)" in again.stderr, again.stderr
    now = statuses(out)
    assert (out / "new.mp4").exists() and now["new"]["status"] == "succeeded"
    assert now["alpha"]["key"] == first["alpha"]["key"]  # unchanged: skipped
    assert now["beta"]["key"] != first["beta"]["key"] and now["beta"]["frames"] > first["beta"]["frames"]  # remade
    assert probe_media(out / "beta.mp4").frames == now["beta"]["frames"]

    long_manifest = inputs / "long.csv"
    long_manifest.write_text("face,audio,name\n" + "".join(f"presenter.mp4,b.wav,t{i}\n" for i in range(4)))
    run = batch(long_manifest, tmp_path / "out2", triton, wait=False)
    deadline = time.monotonic() + 300
    while not (tmp_path / "out2" / "status").exists():  # the first item finished: stop the rest
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 143, stderr
    import re

    counts = re.search(r"(\d+) of 4 succeeded .*, (\d+) failed, (\d+) cancelled", stderr)
    assert counts and counts.group(2) == "0" and int(counts.group(1)) + int(counts.group(3)) == 4, stderr
    assert int(counts.group(3)) >= 1 and "interrupted by SIGTERM" in stderr.splitlines()[-1]
    assert all(r["status"] == "succeeded" for r in statuses(tmp_path / "out2").values())  # nothing recorded as failed
