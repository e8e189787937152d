"""Malformed and hostile input, made here: each gets a clean 4xx (or, for what only decoding can
tell, a failed job with a one-line error; for the CLI a one-line error), nothing is written outside
the data directory, and the service keeps serving. Plus a bounded schemathesis run over the
OpenAPI spec: no input makes the API answer 5xx."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from lipsync_triton.samples import astronaut_bgr
from conftest import tone
from service_harness import Service, wait_for, wait_for_batch

FINAL_OK = ("succeeded", "failed")




def png_bomb(path: Path, side: int = 20000) -> Path:
    """A valid PNG header claiming side x side RGB pixels over a tiny zlib stream of zeros."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)
    body = b"".join(z.compress(row) for _ in range(200)) + z.flush()  # only the first rows: still a bomb by its header
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def nan_wav(path: Path) -> Path:
    """One second of NaN samples as a 32-bit float WAV (format 3, IEEE float), written by hand."""
    data = np.full(16000, np.nan, np.float32).tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 3, 1, 16000, 64000, 4, 32)
    path.write_bytes(header + b"data" + struct.pack("<I", len(data)) + data)
    return path


@pytest.fixture(scope="module")
def corpus(media, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (face, audio); at least one of the two is bad."""
    d = tmp_path_factory.mktemp("hostile")
    clip, speech = media["clip"], media["speech"]
    (d / "empty").write_bytes(b"")
    (d / "text.mp4").write_text("not a video at all\n")
    (d / "truncated.mp4").write_bytes(clip.read_bytes()[:4096])
    (d / "random.bin").write_bytes(np.random.default_rng(0).bytes(50000))
    (d / "html.png").write_text("<html><script>alert(1)</script></html>")
    noise = np.random.default_rng(1).integers(0, 255, (240, 320, 3), np.uint8)
    cv2.imwrite(str(d / "no_face.png"), noise)
    two = np.concatenate([astronaut_bgr(), astronaut_bgr()], axis=1)
    cv2.imwrite(str(d / "two_faces.png"), two)
    cv2.imwrite(str(d / "tiny.png"), np.zeros((4, 4, 3), np.uint8))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-an", "-c", "copy", str(d / "silent_video.mp4")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-c:v", "mpeg4", "-f", "avi", str(d / "presenter.avi")], check=True)
    tone(d / "silence.wav", 2.0, ["-af", "volume=0", "-ar", "16000"])
    tone(d / "long.opus", 4000.0, ["-c:a", "libopus", "-b:a", "6k"])
    tone(d / "odd_rate.wav", 2.0, ["-ar", "7350", "-ac", "2"])
    nan_wav(d / "nan.wav")
    png_bomb(d / "bomb.png")
    return {
        "zero-byte face": (d / "empty", speech), "zero-byte audio": (clip, d / "empty"),
        "text named .mp4": (d / "text.mp4", speech), "truncated mp4": (d / "truncated.mp4", speech),
        "random bytes as face": (d / "random.bin", speech), "random bytes as audio": (clip, d / "random.bin"),
        "html named .png": (d / "html.png", speech), "audio as face": (speech, speech),
        "video without audio as audio": (clip, d / "silent_video.mp4"), "20000x20000 png bomb": (d / "bomb.png", speech),
        "very long audio": (clip, d / "long.opus"), "image without a face": (d / "no_face.png", speech),
        "two faces": (d / "two_faces.png", speech), "4x4 image": (d / "tiny.png", speech),
        "silent audio": (clip, d / "silence.wav"), "NaN audio": (clip, d / "nan.wav"),
        "7350 Hz stereo audio": (clip, d / "odd_rate.wav"), "mpeg4 in avi": (d / "presenter.avi", speech),
    }


@pytest.fixture(scope="module")
def service(triton, tmp_path_factory):
    data = tmp_path_factory.mktemp("hostile_service") / "data"
    with Service(data, triton.grpc_url, extra_env={"LIPSYNC_MAX_UPLOAD_MB": "20", "LIPSYNC_MAX_MEDIA_SECONDS": "600"}) as svc:
        yield svc


def outside_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if "data" not in p.relative_to(root).parts}


def test_each_bad_file_gets_a_4xx_or_a_one_line_failed_job(service, corpus, media):
    outcomes = {}
    with service.client() as api:
        for name, (face, audio) in corpus.items():
            with open(face, "rb") as f, open(audio, "rb") as a:
                response = api.post("/v1/jobs", files={"face": (face.name, f), "audio": (audio.name, a)})
            assert response.status_code < 500, (name, response.text)
            if response.status_code == 202:
                view = wait_for(api, response.json()["id"], timeout=300)
                assert view["status"] in FINAL_OK, (name, view)
                if view["status"] == "failed":
                    assert view["error"] and "\n" not in view["error"] and "Traceback" not in view["error"], (name, view)
                    assert "/tmp" not in view["error"] and str(service.data_dir) not in view["error"], (name, view)  # no server path
                    assert " --" not in view["error"], (name, view)  # no CLI flag a tenant cannot pass
                outcomes[name] = view["status"]
            else:
                detail = response.json()["detail"]
                assert isinstance(detail, str) and "\n" not in detail, (name, detail)
                assert "/tmp" not in detail and str(service.data_dir) not in detail, (name, detail)
                outcomes[name] = response.status_code
        assert api.get("/healthz").status_code == 200
    print(outcomes)
    # The API refuses what does not even start like a container (a look at the first bytes, so
    # submits stay fast); what only the probe or the decoder can tell fails its job in one line.
    expected = {"zero-byte face": 422, "text named .mp4": 422, "truncated mp4": "failed", "random bytes as face": 422,
                "audio as face": 422, "video without audio as audio": "failed", "20000x20000 png bomb": "failed",
                "very long audio": "failed", "image without a face": "failed", "NaN audio": "failed",
                "two faces": "succeeded", "silent audio": "succeeded", "7350 Hz stereo audio": "succeeded",
                "mpeg4 in avi": "succeeded"}
    for name, outcome in expected.items():
        assert outcomes[name] == outcome, (name, outcomes[name])
    assert len(outcomes) >= 18


def test_request_level_hostility(service, media, tmp_path):
    with service.client() as api:
        checks = []
        # shell metacharacters and non-UTF-8 bytes in file names: stored under generated names
        boundary = b"hostileboundary"
        parts = [(b"face", b"$(touch /tmp/pwned-lipsync);`id`.mp4", media["clip"].read_bytes()),
                 (b"audio", b"\xff\xfe../../speech\x00.wav", media["speech"].read_bytes())]  # not UTF-8, traversal, NUL
        body = b"".join(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name + b'"; filename="' + filename
                        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data + b"\r\n" for name, filename, data in parts)
        evil = api.post("/v1/jobs", content=body + b"--" + boundary + b"--\r\n",
                        headers={"Content-Type": "multipart/form-data; boundary=hostileboundary"})
        checks.append(("metacharacter names", evil.status_code == 202))
        view = wait_for(api, evil.json()["id"])
        checks.append(("metacharacter job ran", view["status"] == "succeeded" and "/" not in view["name"]))
        checks.append(("nothing executed", not Path("/tmp/pwned-lipsync").exists()))
        # wrong content types and shapes of request
        checks.append(("json body", api.post("/v1/jobs", json={"face": "x"}).status_code == 422))
        checks.append(("empty multipart", api.post("/v1/jobs", files={}).status_code == 422))
        checks.append(("bad option", api.post("/v1/jobs", data={"resize_factor": "-3"}).status_code == 422))
        with open(media["clip"], "rb") as f, open(media["speech"], "rb") as a:
            bad = api.post("/v1/jobs", files={"face": ("p.mp4", f), "audio": ("s.wav", a)}, data={"face_select": "x" * 5000})
        checks.append(("oversized option", bad.status_code == 422))
        checks.append(("file URL outside the tenant", api.post("/v1/jobs", data={"face_url": "file:///etc/passwd",
                                                                                  "audio_url": "/etc/passwd"}).status_code == 403))
        checks.append(("traversal in an id", api.get("/v1/jobs/..%2F..%2Fetc%2Fpasswd").status_code == 404))
        checks.append(("batch options not JSON", api.post("/v1/batches", data={"options": "{nope"},
                                                         files={"audio": ("s.wav", b"x")}).status_code == 422))
        checks.append(("not a zip", api.post("/v1/batches", files={"archive": ("b.zip", b"PK\x03\x04garbage")}).status_code == 422))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("readme.txt", "no manifest")
        checks.append(("zip without manifest", api.post("/v1/batches", files={"archive": ("b.zip", buf.getvalue())}).status_code == 422))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("manifest.csv", "face,audio\n" + "a.mp4,b.wav\n" * 1001)
        checks.append(("manifest too long", api.post("/v1/batches", files={"archive": ("b.zip", buf.getvalue())}).status_code == 422))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.csv", "face,audio,name\nbomb.mp4,s.wav,bomb\n")
            z.writestr("bomb.mp4", b"\0" * (30 << 20))  # 30 MB of zeros, 30 KB compressed: over the 20 MB limit
            z.write(media["speech"], "s.wav")
        zipped = api.post("/v1/batches", files={"archive": ("b.zip", buf.getvalue())})
        checks.append(("zip bomb member", zipped.status_code == 202))
        bomb = wait_for_batch(api, zipped.json()["id"])["jobs"][0]
        checks.append(("zip bomb refused", bomb["status"] == "failed" and "upload limit" in bomb["error"]))
        checks.append(("still serving", api.get("/healthz").status_code == 200))
    failed = [name for name, ok in checks if not ok]
    assert not failed, failed
    assert len(checks) >= 15


def test_a_hostile_pickle_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = tmp_path / "evil.pth"
    code = f"""
import pickle, os
class Evil:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
with open({str(payload)!r}, "wb") as fh:
    pickle.dump({{"state_dict": Evil()}}, fh)
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    done = subprocess.run([sys.executable, "-m", "lipsync_triton.cli", "export", "--checkpoint", str(payload), "--out",
                           str(tmp_path / "repo")], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and not marker.exists()
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "evil.pth" in last
    assert not (tmp_path / "repo").exists()


def test_schemathesis_finds_no_server_error(service):
    """A bounded property-based run over every operation of the OpenAPI spec."""
    report = service.data_dir.parent / "schemathesis.txt"
    done = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", f"{service.base}/openapi.json",
                           "--checks", "not_a_server_error", "--max-examples", "15", "--workers", "2",
                           "-H", "Authorization: Bearer key-acme-for-tests"],
                          capture_output=True, text=True, timeout=900)
    report.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-4000:]
    with service.client() as api:
        assert api.get("/healthz").status_code == 200
        # found by this run once: an offset beyond SQL's integer range answered 500
        assert api.get("/v1/jobs", params={"offset": 9248220105862533120}).status_code == 422


def test_an_oversized_upload_without_content_length_is_refused_while_it_streams(service):
    """Chunked transfer (no Content-Length): the limit (20 MB here) stops the body as it arrives."""
    sent = 0

    def body():
        nonlocal sent
        yield b'--x\r\nContent-Disposition: form-data; name="face"; filename="big.mp4"\r\n\r\n'
        for _ in range(200):  # a well-formed part that would grow to 200 MB
            sent += 1 << 20
            yield b"\0" * (1 << 20)

    with service.client() as api:
        try:
            response = api.post("/v1/jobs", content=body(), headers={"Content-Type": "multipart/form-data; boundary=x"})
            status = response.status_code
        except httpx_errors() as exc:  # the server may close the connection while we still send
            status = 413 if "413" in str(exc) or sent < (200 << 20) else 0
        assert status == 413 and sent < (200 << 20)
        assert api.get("/healthz").status_code == 200


def httpx_errors():
    import httpx

    return (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError)


def test_no_shell_strings_anywhere_in_the_code():
    """Every child process gets an argument list: no shell=True, os.system or os.popen."""
    from conftest import ROOT

    offenders = []
    for folder in ("lipsync_triton", "client", "preprocessing", "export", "serving", "service", "perf", "docker"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for needle in ("shell=True", "os.system(", "os.popen(", "subprocess.getoutput", "subprocess.getstatusoutput"):
                if needle in text:
                    offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders
