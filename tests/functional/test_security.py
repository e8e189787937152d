"""Attacks by a tenant holding a valid key (or by nobody), each named by what it tries: reading
another tenant's files through media that refers to other files, media whose headers lie, racing
the limits, abusing webhooks, and what the service tells or keeps for someone without a key."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from lipsync_triton.client.generate import GenerateOptions, generate
from lipsync_triton.errors import LipsyncError
from service_harness import Service, submit, wait_for

KEYS = "acme:key-acme-for-tests,globex:key-globex-for-tests"


@pytest.fixture(scope="module")
def service(triton, tmp_path_factory):
    data = tmp_path_factory.mktemp("security") / "data"
    env = {"LIPSYNC_MAX_ACTIVE_JOBS_PER_TENANT": "3", "LIPSYNC_MAX_MEDIA_SECONDS": "60", "LIPSYNC_WEBHOOK_SECRET": "master-secret",
           "LIPSYNC_WEBHOOK_ALLOW": "http://127.0.0.1:9/hooks/", "LIPSYNC_WORKER_PROCESSES": "0", "LIPSYNC_HEADER_TIMEOUT_S": "2",
           "LIPSYNC_OPS_KEY": "ops-key"}
    with Service(data, triton.grpc_url, keys=KEYS, extra_env=env) as svc:
        yield svc


def _referring_files(target: Path, d: Path, read_from: Path | None = None) -> dict[str, Path]:
    """Containers that make a demuxer open `target`, by absolute reference and by a reference relative
    to `read_from` (where the file will be read: the API's request folder), else to where it is written."""
    d.mkdir(parents=True, exist_ok=True)
    paths = {}
    for how in ("absolute", "relative"):
        for kind in ("hls playlist", "concat script", "dash manifest"):
            path = d / f"{kind.replace(' ', '_')}_{how}"
            path.mkdir()
            path = path / "upload"
            ref = str(target) if how == "absolute" else os.path.relpath(target, read_from or path.parent)
            paths[f"{kind}, {how}"] = path
            path.write_text({
                "hls playlist": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{ref}\n#EXT-X-ENDLIST\n",
                "concat script": f"ffconcat version 1.0\nfile '{ref}'\n",
                "dash manifest": (
                    '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
                    'mediaPresentationDuration="PT2S" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">'
                    f'<Period><AdaptationSet><Representation id="0" bandwidth="1000" mimeType="video/mp4"><BaseURL>{ref}'
                    "</BaseURL></Representation></AdaptationSet></Period></MPD>\n"),
            }[kind])
    return paths


def test_an_uploaded_playlist_or_script_cannot_read_another_tenants_files(service, media, tmp_path):
    """globex's presenter and speech lie in the service's storage; acme uploads files that name them."""
    storage = service.data_dir / "files"
    with service.client("key-globex-for-tests") as globex:
        victim = submit(globex, media["clip"], media["speech"])
    victim_files = sorted(p for p in storage.rglob("*") if p.is_file() and victim in str(p))
    assert victim_files, "globex's inputs are stored"
    for victim_file in victim_files:
        refs = _referring_files(victim_file, tmp_path / victim_file.name, read_from=service.data_dir / "tmp" / "request-x")
        for name, upload in refs.items():
            for role in ("face", "audio"):
                files = {"face": ("p.mp4", open(media["clip"], "rb")), "audio": ("s.wav", open(media["speech"], "rb"))}
                files[role] = (f"{role}.m3u8", upload.open("rb"))
                with service.client() as acme:
                    response = acme.post("/v1/jobs", files=files)
                for _, handle in files.values():
                    handle.close()
                assert response.status_code == 422, (name, role, response.text)
                detail = response.json()["detail"]
                assert "\n" not in detail and "refers to other files" in detail and str(service.data_dir) not in detail, detail


def test_the_worker_and_the_cli_refuse_referring_media_too(triton, media, tmp_path):
    """The decoders refuse them wherever they run: a job that got past the API, `lipsync generate`."""
    references = _referring_files(media["clip"].resolve(), tmp_path / "refs")
    speech_refs = _referring_files(media["speech"].resolve(), tmp_path / "speech-refs")
    for name, face in references.items():
        out = tmp_path / "out.mp4"
        with pytest.raises(LipsyncError, match="refers to other files"):
            generate(face, media["speech"], out, triton.grpc_url, GenerateOptions(use_cache=False))
        with pytest.raises(LipsyncError, match="refers to other files"):
            generate(media["clip"], speech_refs[name], out, triton.grpc_url, GenerateOptions(use_cache=False))
        assert not out.exists()
    done = subprocess.run([sys.executable, "-m", "lipsync_triton.cli", "generate", "--face", str(references["hls playlist, absolute"]),
                           "--audio", str(media["speech"]), "--outfile", str(tmp_path / "cli.mp4"), "--url", triton.grpc_url],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and not (tmp_path / "cli.mp4").exists()
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "refers to other files" in last


def test_an_image_sequence_pattern_in_a_file_name_reads_one_file_at_most(triton, media, tmp_path):
    """`img%d.png` would make ffmpeg read img1.png, img2.png...: a name with pattern characters is
    never opened as a sequence."""
    import cv2

    from lipsync_triton.samples import astronaut_bgr

    for i in range(1, 4):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), astronaut_bgr())
    pattern = tmp_path / "img%d.png"
    pattern.write_bytes(b"not an image")
    with pytest.raises(LipsyncError, match="not a readable media file"):
        generate(pattern, media["speech"], tmp_path / "out.mp4", triton.grpc_url, GenerateOptions(use_cache=False))


# --- 2. media whose headers lie -------------------------------------------------------------------

def _lying_media(d: Path) -> dict[str, Path]:
    import cv2

    d.mkdir(parents=True, exist_ok=True)
    fast = d / "fast.mp4"  # 25 frames stamped 1 microsecond apart: ~1,000,000 fps declared
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25", "-t", "1", "-c:v", "libx264",
                    "-bsf:v", "setts=ts=N:duration=1", "-video_track_timescale", "1000000", str(fast)], check=True)
    piped = d / "piped.mka"  # Opus in Matroska written to a pipe: no duration field anywhere
    with open(piped, "wb") as out:
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=200:duration=90", "-c:a", "libopus",
                        "-b:a", "8k", "-f", "matroska", "-"], stdout=out, check=True)
    big = d / "big.png"
    cv2.imwrite(str(big), np.zeros((4096, 4096, 3), np.uint8))
    return {"fast": fast, "piped": piped, "big": big}


def test_media_whose_headers_lie_fail_their_job_in_one_line_before_decoding(triton, media, tmp_path):
    """The API accepts what starts like a container (a cheap look: submits stay fast); the worker
    probes it and refuses it from its headers or while measuring it, before any frame is decoded."""
    lying = _lying_media(tmp_path)
    from lipsync_triton.preprocessing.media_probe import probe_media

    assert probe_media(lying["piped"]).stated_seconds == 0  # the attack: a length nobody states
    cases = {"1,000,000 fps presenter": ((lying["fast"], media["speech"]), "frames per second"),
             "speech without a duration, 90 s > 60 s limit": ((media["clip"], lying["piped"]), "the limit is 60 s"),
             "4096x4096 photo": ((lying["big"], media["speech"]), "pixels")}
    with Service(tmp_path / "data", triton.grpc_url, keys=KEYS, extra_env={"LIPSYNC_MAX_MEDIA_SECONDS": "60"}) as svc:
        with svc.client() as api:
            for name, ((face, audio), words) in cases.items():
                with open(face, "rb") as f, open(audio, "rb") as a:
                    response = api.post("/v1/jobs", files={"face": (face.name, f), "audio": (audio.name, a)})
                assert response.status_code == 202, (name, response.text)
                view = wait_for(api, response.json()["id"], timeout=300)
                assert view["status"] == "failed" and words in view["error"] and "\n" not in view["error"], (name, view)
                assert view["attempts"] == 1 and view["frames"] is None, (name, view)  # the input's fault: no retry


def test_the_cli_refuses_a_lying_frame_rate_and_enforces_a_length_limit_while_decoding(triton, media, tmp_path):
    lying = _lying_media(tmp_path)
    with pytest.raises(LipsyncError, match="frames per second"):
        generate(lying["fast"], media["speech"], tmp_path / "a.mp4", triton.grpc_url, GenerateOptions(use_cache=False))
    from lipsync_triton.preprocessing.audio import load_mel
    from lipsync_triton.preprocessing.media_input import MediaLimits, MediaTooLong

    with pytest.raises(MediaTooLong, match="the limit is 60 s"):
        load_mel(lying["piped"], MediaLimits(max_seconds=60))
    assert load_mel(lying["piped"], MediaLimits(max_seconds=120)).shape[1] > 80 * 89
    assert not (tmp_path / "a.mp4").exists()


# --- 3. limits and isolation under concurrency ------------------------------------------------------

def _race(base: str, key: str, media: dict, batch: bool) -> list[int]:
    """12 parallel single submits, or 4 parallel 3-item batches."""
    def one(_):
        with httpx.Client(base_url=base, timeout=300, headers={"Authorization": f"Bearer {key}"}) as api, \
                open(media["clip"], "rb") as f, open(media["speech"], "rb") as a:
            if batch:
                files = [("faces", (f"{i}.mp4", f.read() if i == 0 else media["clip"].read_bytes())) for i in range(3)]
                return api.post("/v1/batches", files=files + [("audio", ("s.wav", a))]).status_code
            return api.post("/v1/jobs", files={"face": ("p.mp4", f), "audio": ("s.wav", a)}).status_code

    with ThreadPoolExecutor(12) as pool:
        return list(pool.map(one, range(4 if batch else 12)))


def _active(svc: Service, key: str) -> int:
    with svc.client(key) as api:
        return sum(j["status"] in ("queued", "running") for j in api.get("/v1/jobs", params={"limit": 200}).json()["jobs"])


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_parallel_submits_cannot_pass_the_active_job_limit_together(triton, media, tmp_path, database):
    env = {"LIPSYNC_MAX_ACTIVE_JOBS_PER_TENANT": "3", "LIPSYNC_WORKER_PROCESSES": "0"}  # no worker: jobs stay queued
    name = None
    if database == "postgresql":
        import uuid

        import psycopg

        name = f"lipsync_race_{uuid.uuid4().hex[:8]}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        env["LIPSYNC_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        with Service(tmp_path / "data", triton.grpc_url, keys=KEYS, extra_env=env) as svc:
            singles = _race(svc.base, "key-acme-for-tests", media, batch=False)
            assert sorted(singles) == [202] * 3 + [429] * 9, singles
            assert _active(svc, "key-acme-for-tests") == 3
            batches = _race(svc.base, "key-globex-for-tests", media, batch=True)
            assert sorted(batches) == [202] + [429] * 3, batches
            assert _active(svc, "key-globex-for-tests") == 3
            leftovers = [p for p in (svc.data_dir / "files").rglob("*") if p.is_file()]
            assert len(leftovers) == 2 * 3 + 2 * 3  # refused requests left no stored inputs behind
    finally:
        if name:
            import psycopg

            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_symlink_planted_under_a_tenants_prefix_does_not_reach_other_files(service, media):
    storage = service.data_dir / "files"
    prefix = storage / "tenants" / "acme"
    (prefix / "sub").mkdir(parents=True, exist_ok=True)
    secret = storage / "inputs" / "secret.mp4"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(media["clip"].read_bytes())
    (prefix / "face.mp4").unlink(missing_ok=True)
    (prefix / "face.mp4").symlink_to(secret)
    linked_dir = prefix / "linked"
    if not linked_dir.is_symlink():
        linked_dir.symlink_to(storage / "inputs", target_is_directory=True)
    (prefix / "speech.wav").write_bytes(media["speech"].read_bytes())
    with service.client() as api:
        for face_url in (f"{prefix}/face.mp4", f"{prefix}/linked/secret.mp4"):
            response = api.post("/v1/jobs", data={"face_url": face_url, "audio_url": f"{prefix}/speech.wav"})
            assert response.status_code == 403, (face_url, response.text)
            assert str(storage) not in response.json()["detail"]  # no server path in the answer


def test_batch_archive_members_are_named_safely_whatever_the_manifest_says(triton, media, tmp_path):
    import io
    import zipfile

    from service_harness import wait_for_batch

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.csv", 'face,audio,name\np.mp4,s.wav,../../../../tmp/x\np.mp4,s.wav,"a\r\nb"\n')
        z.write(media["clip"], "p.mp4")
        z.write(media["speech"], "s.wav")
    with Service(tmp_path / "data", triton.grpc_url, keys=KEYS) as svc, svc.client() as api:
        created = api.post("/v1/batches", files={"archive": ("b.zip", buf.getvalue())})
        assert created.status_code == 202, created.text
        view = wait_for_batch(api, created.json()["id"])
        assert [j["status"] for j in view["jobs"]] == ["succeeded", "succeeded"], view
        archive = api.get(view["links"]["archive"])
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert len(names) == 2
    for name in names:
        assert "/" not in name and ".." not in name and "\r" not in name and "\n" not in name, names


# --- 4. webhooks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:8000/v2/repository/index", "another port of an allowed host (Triton's HTTP API)"),
    ("http://127.0.0.1:9/admin/hooks/x", "a path outside the allowed prefix"),
    ("http://127.0.0.1:9/hooks/../admin", "a path that climbs out of the prefix"),
    ("http://127.0.0.1:9/hooks/%2e%2e/admin", "an encoded climb"),
    ("http://127.0.0.1:9/hooks/..%2Fadmin", "an encoded separator after '..' (nginx routes it to /admin)"),
    ("http://127.0.0.1:9/hooks/..%2fadmin", "the same, lower case"),
    ("http://127.0.0.1:9/hooks/a%2F..%2F..%2Fadmin", "a climb made only of encoded separators"),
    ("http://127.0.0.1:9/hooks/..\\admin", "a backslash (some servers read it as '/')"),
    ("http://127.0.0.1:9/hooks/%252e%252e/admin", "a double-encoded climb"),
    ("http://127.0.0.1:9/hooks/a%5C..%5Cadmin", "encoded backslashes"),
    ("https://127.0.0.1:9/hooks/x", "another scheme"),
    ("http://user:pass@127.0.0.1:9/hooks/x", "user info, which would become an Authorization header"),
    ("http://[::1/hooks", "a broken IPv6 literal (was a 500)"),
    ("http://127.0.0.1:9/hooks/\uff03x", "a fullwidth number sign (was a 500)"),
    ("http://127.0.0.1\uff03@evil.example:9/hooks/x", "a fullwidth sign hiding the host"),
    ("http://127.0.0.1:99999/hooks/x", "a port out of range"),
    ("ftp://127.0.0.1:9/hooks/x", "not http"),
])
def test_webhook_urls_outside_the_allowed_prefixes_are_a_422(service, media, url, why):
    with service.client() as api, open(media["clip"], "rb") as f, open(media["speech"], "rb") as a:
        response = api.post("/v1/jobs", files={"face": ("p.mp4", f), "audio": ("s.wav", a)}, data={"webhook_url": url})
    assert response.status_code == 422, (why, response.text)
    assert "webhook" in response.json()["detail"], why


def test_webhook_signatures_are_per_tenant_timestamped_and_refuse_replays(service):
    from lipsync_triton.service.webhooks import sign, verify_signature

    with service.client() as acme, service.client("key-globex-for-tests") as globex:
        mine, theirs = acme.get("/v1/webhook-secret").json()["secret"], globex.get("/v1/webhook-secret").json()["secret"]
    assert mine != theirs and "master-secret" not in (mine + theirs)
    body = b'{"event": "job.finished"}'
    forged = sign(theirs, body)  # globex signs an event as if it came for acme
    assert verify_signature(theirs, forged, body) and not verify_signature(mine, forged, body)
    old = sign(mine, body, timestamp=1_700_000_000)
    assert not verify_signature(mine, old, body)  # a captured event replayed later
    assert verify_signature(mine, old, body, now=1_700_000_100)


# --- 5. the web UI and what answers without a key ---------------------------------------------------

def test_nothing_is_stored_or_told_without_a_key(service):
    upload = httpx.post(f"{service.base}/ui/gradio_api/upload", files={"files": ("x.bin", b"\0" * 1000)})
    assert upload.status_code == 401  # Gradio's upload endpoint signs in first, like the API
    assert httpx.get(f"{service.base}/ui/config").status_code == 401
    metrics = httpx.get(f"{service.base}/metrics").text
    assert "lipsync_jobs" in metrics and "tenant=" not in metrics and "globex" not in metrics
    ready = httpx.get(f"{service.base}/readyz").json()
    assert set(ready) == {"ready", "weights", "checks"} and all(set(c) == {"ok"} for c in ready["checks"].values())
    assert "127.0.0.1" not in json.dumps(ready)
    detailed = httpx.get(f"{service.base}/readyz", headers={"Authorization": "Bearer ops-key"}).json()
    assert detailed["checks"]["triton"]["detail"]
    tenant_key = httpx.get(f"{service.base}/readyz", headers={"Authorization": "Bearer key-acme-for-tests"}).json()
    assert all(set(c) == {"ok"} for c in tenant_key["checks"].values())  # a tenant's key is not an operator's


def test_the_managed_tritonserver_listens_on_loopback_only(triton):
    import psutil

    ports = {triton.ports.grpc, triton.ports.http, triton.ports.metrics}
    listening = [c.laddr for c in psutil.Process(triton.proc.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert {a.port for a in listening} >= ports
    assert all(a.ip in ("127.0.0.1", "::ffff:127.0.0.1") for a in listening if a.port in ports), listening


def test_deeply_nested_json_is_a_422_and_a_500_still_carries_the_security_headers(service, tmp_path):
    with service.client() as api:
        deep = api.post("/v1/batches", data={"options": "[" * 100_000 + "]" * 100_000}, files={"audio": ("s.wav", b"x")})
        assert deep.status_code == 422, deep.text
        assert deep.headers["x-content-type-options"] == "nosniff"
    from fastapi.testclient import TestClient

    from lipsync_triton.service.api import create_app
    from lipsync_triton.service.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, api_keys="acme:key-acme-for-tests"))

    @app.get("/test-only-crash")
    def crash():
        raise RuntimeError(f"secret detail at {tmp_path}")

    response = TestClient(app, raise_server_exceptions=False).get("/test-only-crash")
    assert response.status_code == 500 and response.headers["x-content-type-options"] == "nosniff"
    assert str(tmp_path) not in response.text and "secret" not in response.text


def test_slow_clients_are_cut_off_and_the_service_keeps_answering(service):
    """16 slowloris connections: headers a byte at a time, and a body that stalls. The header deadline
    (2 s here) closes them; meanwhile and after, a normal request is answered."""
    import socket
    import time

    port = service.port
    sockets = []
    for i in range(16):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(0.2)
        sockets.append(s)
    closed: set[int] = set()
    deadline = time.monotonic() + 120  # generous for a loaded machine; the deadline itself is 2 s
    while len(closed) < len(sockets) and time.monotonic() < deadline:
        for i, s in enumerate(sockets):
            if i in closed:
                continue
            try:
                s.sendall(b"X")  # one more header byte
                if s.recv(1024) == b"":
                    closed.add(i)
            except socket.timeout:
                pass
            except OSError:
                closed.add(i)
        assert httpx.get(f"{service.base}/healthz", timeout=30).status_code == 200
        time.sleep(0.5)
    for s in sockets:
        s.close()
    assert len(closed) == len(sockets), f"{len(sockets) - len(closed)} slow connections still open"
