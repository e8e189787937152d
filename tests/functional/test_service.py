"""The job service end to end: a real `lipsync api` with its worker process, a real tritonserver,
SQLite + the embedded queue + a local data directory (the embedded defaults), over HTTP."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from lipsync_triton.preprocessing.media_probe import probe_media
from conftest import tone
from service_harness import Service, submit, ui_sign_in, wait_for, wait_for_batch, wait_running




@pytest.fixture(scope="module")
def service(triton, tmp_path_factory):
    data = tmp_path_factory.mktemp("service") / "data"
    with Service(data, triton.grpc_url, extra_env={"LIPSYNC_MAX_UPLOAD_MB": "5", "LIPSYNC_OPS_KEY": "ops-key"}) as svc:
        yield svc


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory) -> Path:
    return tone(tmp_path_factory.mktemp("long") / "long.wav", 40.0)


def test_start_up_says_where_to_go_in_words_and_logs_in_one_format(service):
    """A person starting the service reads where the UI is and where its Triton listens (what
    `lipsync batch --url` needs); every log line is JSON with a UTC timestamp and a level, and a
    normal start logs no warning about Triton."""
    import json

    text = service.log.read_text()
    assert f"lipsync api: open http://127.0.0.1:{service.port}/ui" in text, text[-2000:]
    assert f"--url {service.env['LIPSYNC_TRITON_URLS'].split(',')[0]}" in text
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("lipsync api: ")]
    records = [json.loads(line) for line in lines]  # not one logfmt or free-text line among them
    assert all(r["ts"].endswith("Z") and r["level"] in ("info", "warning", "error") for r in records), records[:3]
    assert not [r for r in records if r["event"] in ("worker_waiting_for_triton", "waiting_for_triton")], records


def test_a_job_runs_and_its_result_streams_with_range_requests(service, media):
    with service.client() as api:
        job_id = submit(api, media["clip"], media["speech"], pads="0 20 0 0")
        view = wait_for(api, job_id)
        assert view["status"] == "succeeded", view
        assert view["progress"] == 1.0 and view["attempts"] == 1 and view["options"]["pads"] == [0, 20, 0, 0]
        assert view["weights"] == "random"  # the result says it came from random weights (a blurred mouth)
        assert view["timings"]["run_s"] > 0 and view["links"]["result"].endswith("/result")
        full = api.get(f"/v1/jobs/{job_id}/result")
        assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
        assert full.headers["accept-ranges"] == "bytes"
        part = api.get(f"/v1/jobs/{job_id}/result", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == full.content[100:200]
        out = service.data_dir.parent / "result.mp4"
        out.write_bytes(full.content)
        info = probe_media(out)
        assert info.has_video and info.has_audio and info.frames == view["frames"] > 0
        head = api.head(f"/v1/jobs/{job_id}/result")  # a download manager's or proxy's size check
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(full.content) and head.content == b""
        thumb = api.get(f"/v1/jobs/{job_id}/thumbnail")
        assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"  # JPEG
        listed = api.get("/v1/jobs", params={"limit": 5}).json()
        assert listed["jobs"][0]["id"] == job_id
        ops = {"Authorization": "Bearer ops-key"}
        metrics = httpx.get(f"{service.base}/metrics", headers=ops).text
        assert 'lipsync_jobs{status="succeeded",tenant="acme"}' in metrics and "lipsync_queue_depth" in metrics
        assert 'lipsync_job_run_seconds_count{tenant="acme"}' in metrics
        assert 'lipsync_jobs_finished_total{status="succeeded",tenant="acme"}' in metrics
        public = httpx.get(f"{service.base}/metrics").text  # a scraper without the key: totals, no tenant names
        assert 'lipsync_jobs{status="succeeded"}' in public and "acme" not in public
    ready = httpx.get(f"{service.base}/readyz", headers=ops).json()
    assert ready["ready"] is True and set(ready["checks"]) == {"triton", "storage", "queue", "database"}
    assert ready["weights"] == "random" and httpx.get(f"{service.base}/readyz").json()["weights"] == "random"
    assert ready["checks"]["triton"]["detail"] == "ready"


def test_logs_are_json_lines_with_job_and_tenant(service):
    lines = [json.loads(line) for line in service.log.read_text().splitlines() if line.startswith("{")]
    done = [r for r in lines if r["event"] == "job_succeeded"]
    assert done and {"job", "tenant", "seconds", "frames"} <= set(done[0])
    assert not any("key-acme-for-tests" in line for line in service.log.read_text().splitlines())


def test_tenants_never_see_each_other(service, media):
    with service.client("key-acme-for-tests") as acme, service.client("key-globex-for-tests") as globex, service.client(None) as anonymous:
        job_id = submit(acme, media["clip"], media["speech"])
        wait_for(acme, job_id)
        with open(media["clip"], "rb") as f, open(media["speech"], "rb") as a:
            batch = acme.post("/v1/batches", files=[("faces", ("p.mp4", f)), ("audio", ("s.wav", a))]).json()
        wait_for_batch(acme, batch["id"])
        for method, path in [("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/result"),
                             ("GET", f"/v1/jobs/{job_id}/thumbnail"), ("POST", f"/v1/jobs/{job_id}/cancel"),
                             ("DELETE", f"/v1/jobs/{job_id}"), ("GET", f"/v1/batches/{batch['id']}"),
                             ("GET", f"/v1/batches/{batch['id']}/archive")]:
            assert globex.request(method, path).status_code == 404, path
            assert anonymous.request(method, path).status_code == 401, path
            assert acme.request(method, path, headers={"Authorization": "Bearer key-acme-for-tests-wrong"}).status_code == 401
        assert job_id not in {j["id"] for j in globex.get("/v1/jobs").json()["jobs"]}
        assert acme.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"  # untouched by globex's delete


def test_bad_requests_get_a_clear_4xx(service, media, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    with service.client() as api:
        with open(text, "rb") as f, open(media["speech"], "rb") as a:
            bad = api.post("/v1/jobs", files={"face": ("notes.mp4", f), "audio": ("s.wav", a)})
        assert bad.status_code == 422 and "face is not a video, photo or audio file" in bad.json()["detail"]
        with open(media["clip"], "rb") as f, open(media["speech"], "rb") as a:
            bad = api.post("/v1/jobs", files={"face": ("p.mp4", f), "audio": ("s.wav", a)}, data={"pads": "1 2 3"})
        assert bad.status_code == 422 and bad.json()["detail"].startswith("option pads")
        with open(media["clip"], "rb") as f:
            bad = api.post("/v1/jobs", files={"face": ("p.mp4", f)})
        assert bad.status_code == 422 and "audio" in bad.json()["detail"]
        huge = io.BytesIO(b"\0" * (6 << 20))
        bad = api.post("/v1/jobs", files={"face": ("big.mp4", huge), "audio": ("s.wav", b"x")})
        assert bad.status_code == 413 and "5 MB limit" in bad.json()["detail"]
        assert api.get("/v1/jobs/not-a-job").status_code == 404
    # nothing half-stored: the request folders are gone
    assert not any((service.data_dir / "tmp").glob("request-*"))


def test_a_batch_with_one_bad_item_finishes_the_rest(service, media, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(media["clip"].read_bytes()[:3000])
    with service.client() as api:
        with open(media["clip"], "rb") as f, open(bad, "rb") as b, open(media["speech"], "rb") as a:
            created = api.post("/v1/batches", files=[("faces", ("good.mp4", f)), ("faces", ("broken.mp4", b)),
                                                     ("audio", ("s.wav", a))])
        assert created.status_code == 202, created.text
        view = wait_for_batch(api, created.json()["id"])
        by_name = {j["name"]: j for j in view["jobs"]}
        assert by_name["good"]["status"] == "succeeded"
        assert by_name["broken"]["status"] == "failed" and by_name["broken"]["error"]
        archive = api.get(view["links"]["archive"])
        assert archive.status_code == 200
        names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
        assert names == ["good.mp4"]  # the one naming rule, as `lipsync batch` names its results


def test_a_zip_batch_refuses_path_tricks_per_item(service, media, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.csv", "face,audio,name\nclips/p.mp4,s.wav,good\n../etc/passwd,s.wav,escape\n"
                                   "/etc/passwd,s.wav,absolute\nlink.mp4,s.wav,symlink\nmissing.mp4,s.wav,missing\n")
        z.write(media["clip"], "clips/p.mp4")
        z.write(media["speech"], "s.wav")
        link = zipfile.ZipInfo("link.mp4")
        link.external_attr = (0o120777 << 16)
        z.writestr(link, "/etc/passwd")
    with service.client() as api:
        created = api.post("/v1/batches", files={"archive": ("batch.zip", buf.getvalue())})
        assert created.status_code == 202, created.text
        view = wait_for_batch(api, created.json()["id"])
    states = {j["name"]: (j["status"], j["error"] or "") for j in view["jobs"]}
    assert states["good"][0] == "succeeded"
    assert "not a plain relative path" in states["escape"][1] and "not a plain relative path" in states["absolute"][1]
    assert "symbolic link" in states["symlink"][1] and "does not hold" in states["missing"][1]
    assert not (service.data_dir.parent / "etc").exists()


def test_cancel_reaches_a_running_job_within_seconds(service, media, long_speech):
    with service.client() as api:
        job_id = submit(api, media["clip"], long_speech)
        wait_running(api, job_id, progress=0.0)
        asked = time.monotonic()
        assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        view = wait_for(api, job_id, timeout=60)
        assert view["status"] == "cancelled" and time.monotonic() - asked < 30
        assert api.get(f"/v1/jobs/{job_id}/result").status_code == 409
        assert not list((service.data_dir / "files" / "results").rglob(f"{job_id}*"))
        # deleting removes the row and the inputs
        assert api.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert api.get(f"/v1/jobs/{job_id}").status_code == 404
        assert not (service.data_dir / "files" / "inputs" / "acme" / job_id).exists()


def test_fifty_concurrent_submissions_all_finish_once(service, tmp_path):
    from lipsync_triton.samples import write_presenter_clip

    face = write_presenter_clip(tmp_path / "tiny.mp4", 0.4, fps=25, width=160, height=96)
    speech = tone(tmp_path / "short.wav", 0.4)

    def one(_):
        with service.client("key-globex-for-tests") as api:
            return submit(api, face, speech)

    with ThreadPoolExecutor(50) as pool:
        ids = list(pool.map(one, range(50)))
    assert len(set(ids)) == 50
    with service.client("key-globex-for-tests") as api:
        views = [wait_for(api, job_id, timeout=600) for job_id in ids]
        listed = api.get("/v1/jobs", params={"limit": 200}).json()
    assert all(v["status"] == "succeeded" for v in views), [v["error"] for v in views if v["status"] != "succeeded"]
    assert all(v["attempts"] == 1 for v in views)
    assert sorted(j["id"] for j in listed["jobs"] if j["id"] in set(ids)) == sorted(ids)
    results = list((service.data_dir / "files" / "results" / "globex").glob("*.mp4"))
    assert {p.stem for p in results} >= set(ids)


def test_retention_expires_old_jobs_and_deletes_their_files(service, media):
    with service.client() as api:
        job_id = submit(api, media["clip"], media["speech"])
        assert wait_for(api, job_id)["status"] == "succeeded"
        result = service.data_dir / "files" / "results" / "acme" / f"{job_id}.mp4"
        assert result.exists()
        env = {**service.env}
        done = subprocess.run([sys.executable, "-m", "lipsync_triton.cli", "retention", "--days", "0"], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0 and int(done.stdout.strip().splitlines()[-1]) >= 1
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "expired"
        assert api.get(f"/v1/jobs/{job_id}/result").status_code == 410
        assert not result.exists() and not (service.data_dir / "files" / "inputs" / "acme" / job_id).exists()


def test_a_worker_killed_mid_job_leaves_it_to_run_again(triton, media, long_speech, tmp_path):
    env = {"LIPSYNC_STALE_JOB_S": "3"}
    with Service(tmp_path / "data", triton.grpc_url, workers=0, extra_env=env) as svc:
        worker_cmd = [sys.executable, "-m", "lipsync_triton.cli", "worker"]
        worker = subprocess.Popen(worker_cmd, env=svc.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with svc.client() as api:
                speech = tone(tmp_path / "speech.wav", 12.0)
                job_id = submit(api, media["clip"], speech)
                wait_running(api, job_id)
                worker.kill()  # SIGKILL: no chance to hand the job back
                worker.wait()
                assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
                worker = subprocess.Popen(worker_cmd, env=svc.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                view = wait_for(api, job_id, timeout=300)
            assert view["status"] == "succeeded" and view["attempts"] == 2
            results = list((svc.data_dir / "files" / "results").rglob(f"{job_id}*"))
            assert sorted(p.suffix for p in results) == [".jpg", ".mp4"]  # one result, not two
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)


def test_a_draining_worker_finishes_its_running_job_on_sigterm(triton, media, tmp_path):
    """LIPSYNC_WORKER_DRAIN_S: a scale-in's SIGTERM does not throw away the work of a running job."""
    with Service(tmp_path / "data", triton.grpc_url, workers=0, extra_env={"LIPSYNC_WORKER_DRAIN_S": "300"}) as svc:
        worker = subprocess.Popen([sys.executable, "-m", "lipsync_triton.cli", "worker"], env=svc.env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with svc.client() as api:
                job_id = submit(api, media["clip"], tone(tmp_path / "speech.wav", 8.0))
                wait_running(api, job_id)
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=300) == 0
                view = api.get(f"/v1/jobs/{job_id}").json()
            assert view["status"] == "succeeded" and view["attempts"] == 1, view  # finished, not handed back
        finally:
            if worker.poll() is None:
                worker.kill()


def test_the_service_refuses_to_start_without_keys_unless_local_only(triton, tmp_path):
    base = {**os.environ, "LIPSYNC_DATA_DIR": str(tmp_path / "d"), "LIPSYNC_API_KEYS": "", "LIPSYNC_WORKER_PROCESSES": "0"}
    no_keys = subprocess.run([sys.executable, "-m", "lipsync_triton.cli", "api", "--port", "1"], env=base,
                             capture_output=True, text=True, timeout=60)
    assert no_keys.returncode != 0 and no_keys.stderr.strip().startswith("error: no API keys configured")
    exposed = subprocess.run([sys.executable, "-m", "lipsync_triton.cli", "api", "--host", "0.0.0.0", "--port", "1"],
                             env={**base, "LIPSYNC_LOCAL_ONLY": "1"}, capture_output=True, text=True, timeout=60)
    assert exposed.returncode != 0 and "loopback" in exposed.stderr
    with Service(tmp_path / "local", triton.grpc_url, keys="", workers=0, extra_env={"LIPSYNC_LOCAL_ONLY": "1"}) as svc:
        with svc.client(None) as api:
            assert api.get("/v1/jobs").status_code == 200  # one local tenant, no key


def test_while_triton_is_down_readyz_fails_and_the_ui_says_model_initialising(tmp_path):
    from playwright.sync_api import sync_playwright
    from service_harness import free_port

    with Service(tmp_path / "data", f"127.0.0.1:{free_port()}", workers=0) as svc:
        assert httpx.get(f"{svc.base}/healthz").status_code == 200
        ready = httpx.get(f"{svc.base}/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["triton"]["ok"] is False
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS, headless=True)
            try:
                page = browser.new_page()
                ui_sign_in(page, svc.base)
                page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('Model initialising')",
                                       timeout=60000)
            finally:
                browser.close()


def test_limits_on_active_jobs_and_hashed_keys(triton, media, tmp_path):
    import hashlib

    keys = tmp_path / "keys.txt"
    keys.write_text("# tenant:sha256 of the key\nbank:" + hashlib.sha256(b"bank-key").hexdigest() + "\n")
    env = {"LIPSYNC_MAX_MEDIA_SECONDS": "1", "LIPSYNC_MAX_ACTIVE_JOBS_PER_TENANT": "1", "LIPSYNC_API_KEYS_FILE": str(keys)}
    photo = media["dir"] / "photo.png"
    import cv2
    from lipsync_triton.samples import astronaut_bgr

    cv2.imwrite(str(photo), astronaut_bgr())
    with Service(tmp_path / "data", triton.grpc_url, keys="", workers=0, extra_env=env) as svc:
        with svc.client("bank-key") as api:
            # (the length limit is the worker's: test_security's lying-media test runs it)
            short = tone(tmp_path / "short.wav", 0.5)
            submit(api, photo, short)  # queued: no worker runs in this service
            with open(photo, "rb") as f, open(short, "rb") as a:
                busy = api.post("/v1/jobs", files={"face": ("p.png", f), "audio": ("s.wav", a)})
            assert busy.status_code == 429 and "limit is 1 per tenant" in busy.json()["detail"]
        with svc.client("bank-key-wrong") as wrong:
            assert wrong.get("/v1/jobs").status_code == 401


def test_a_batch_of_face_audio_pairs(service, media, tmp_path):
    other = tone(tmp_path / "other.wav", 1.0)
    with service.client() as api:
        with open(media["clip"], "rb") as f1, open(media["clip"], "rb") as f2, open(media["speech"], "rb") as a1, \
                open(other, "rb") as a2:
            created = api.post("/v1/batches", files=[("faces", ("a.mp4", f1)), ("faces", ("b.mp4", f2)),
                                                     ("audios", ("a.wav", a1)), ("audios", ("b.wav", a2))],
                               data={"options": json.dumps({"pads": [0, 15, 0, 0]})})
        assert created.status_code == 202, created.text
        view = wait_for_batch(api, created.json()["id"])
    assert [(j["name"], j["status"], j["options"]["pads"]) for j in view["jobs"]] == [
        ("a", "succeeded", [0, 15, 0, 0]), ("b", "succeeded", [0, 15, 0, 0])]
    assert view["jobs"][1]["frames"] < view["jobs"][0]["frames"]  # each item follows its own audio


def test_webhooks_are_signed_per_tenant_and_only_go_to_allowed_urls(triton, media, tmp_path):
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[tuple[dict, bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    env = {"LIPSYNC_WEBHOOK_ALLOW": f"http://127.0.0.1:{hook.server_port}/hook", "LIPSYNC_WEBHOOK_SECRET": "s3cret"}
    try:
        with Service(tmp_path / "data", triton.grpc_url, extra_env=env) as svc, svc.client() as api:
            secret = api.get("/v1/webhook-secret").json()["secret"]
            with svc.client("key-globex-for-tests") as other:
                assert other.get("/v1/webhook-secret").json()["secret"] != secret
            with open(media["clip"], "rb") as f, open(media["speech"], "rb") as a:
                refused = api.post("/v1/jobs", files={"face": ("p.mp4", f), "audio": ("s.wav", a)},
                                   data={"webhook_url": "http://example.com/hook"})
            assert refused.status_code == 422 and "not allowed" in refused.json()["detail"]
            job_id = submit(api, media["clip"], media["speech"], webhook_url=f"http://127.0.0.1:{hook.server_port}/hook")
            wait_for(api, job_id)
            deadline = time.monotonic() + 60
            while not received and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        hook.shutdown()
    headers, body = received[0]
    assert json.loads(body)["job"]["id"] == job_id
    from lipsync_triton.service.webhooks import verify_signature

    signature = headers["X-Lipsync-Signature"]
    assert verify_signature(secret, signature, body)
    assert not verify_signature(secret, signature, body + b" ")  # tampered
    assert not verify_signature(secret, signature, body, now=time.time() + 3600)  # replayed an hour later


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def test_a_job_with_silent_speech_succeeds_and_says_so(service, media, tmp_path):
    silent = tone(tmp_path / "silent.wav", 2.0, ["-af", "volume=0", "-ar", "16000"])
    with service.client() as api:
        view = wait_for(api, submit(api, media["clip"], silent))
        assert view["status"] == "succeeded" and "speech is silent" in (view["warning"] or ""), view
        normal = wait_for(api, submit(api, media["clip"], media["speech"]))
        assert normal["status"] == "succeeded" and normal["warning"] is None, normal


def test_the_web_ui_generates_with_a_registered_presenter_picked_from_a_list(service, media):
    from playwright.sync_api import sync_playwright

    with service.client() as api, open(media["clip"], "rb") as f:
        presenter = api.post("/v1/presenters", files={"face": ("desk.mp4", f)}, data={"name": "Picked desk"}).json()["id"]
        deadline = time.monotonic() + 300
        while api.get(f"/v1/presenters/{presenter}").json()["status"] == "preparing":
            assert time.monotonic() < deadline
            time.sleep(0.5)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            ui_sign_in(page, service.base)
            page.locator("#presenter-pick input").click()
            page.get_by_role("option", name=f"Picked_desk ({presenter[:8]})").click()  # names are kept safe: _ for spaces
            page.locator("#audio-file input[type=file]").set_input_files(str(media["speech"]))
            page.locator("#submit").click()
            page.wait_for_selector("#result-video video", timeout=300000)
            assert "succeeded" in page.locator("#job-progress").inner_text()
        finally:
            browser.close()
    with service.client() as api:
        assert any(j["presenter_id"] == presenter and j["status"] == "succeeded" for j in api.get("/v1/jobs").json()["jobs"])


def test_the_web_ui_words_a_refusal_instead_of_showing_a_status_code(service, media):
    from lipsync_triton.service.ui import ApiClient, ApiError

    with open(media["speech"], "rb") as f, open(media["speech"], "rb") as a, pytest.raises(ApiError) as refused:
        ApiClient(service.base, "key-acme-for-tests").call("POST", "/v1/jobs", files={"face": ("s.wav", f), "audio": ("s.wav", a)})
    assert str(refused.value).startswith("Not accepted: face ") and "422" not in str(refused.value), refused.value


def test_the_web_ui_runs_a_job_and_shows_its_video_in_chromium(service, media):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            ui_sign_in(page, service.base)
            page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('Ready')", timeout=60000)
            page.locator("#face-file input[type=file]").set_input_files(str(media["clip"]))
            page.locator("#audio-file input[type=file]").set_input_files(str(media["speech"]))
            # the previews load (under /ui/, where the UI is mounted) and the browser decodes them
            page.wait_for_function("document.querySelector('#face-preview video')?.readyState >= 1", timeout=60000)
            page.wait_for_selector("#audio-preview a[download]", timeout=60000)  # the player fetched the speech
            sources = page.evaluate("[document.querySelector('#face-preview video').currentSrc,"
                                    " document.querySelector('#audio-preview a[download]').href]")
            for source in sources:
                assert "/ui/gradio_api/file=" in source, sources
                assert page.request.get(source).status in (200, 206), source
            page.locator("#submit").click()
            page.wait_for_selector("#result-video video", timeout=300000)
            assert "succeeded" in page.locator("#job-progress").inner_text()
            assert "presenter-lipsync.mp4" in page.locator("#result-file").inner_text().replace("\n", "")  # named after the input
            # the browser loaded and decoded the video (readyState >= HAVE_METADATA)
            page.wait_for_function("document.querySelector('#result-video video').readyState >= 1", timeout=60000)
            assert page.evaluate("document.querySelector('#result-video video').duration") > 0.5
            headers = page.request.get(f"{service.base}/ui/").headers
            assert headers.get("x-content-type-options") == "nosniff"
            # who is signed in, the way to live mode and back, and signing out
            assert "Signed in as acme" in page.locator("#signed-in").inner_text()
            assert page.locator("#signed-in a", has_text="Live mode").get_attribute("href") == "/live"
            assert page.request.get(f"{service.base}/live").ok and 'href="/ui/"' in page.request.get(f"{service.base}/live").text()
            # the recent jobs list has the job as soon as it ended; its row opens the result
            page.get_by_role("tab", name="Your recent jobs").click()
            page.wait_for_function("document.querySelector('#recent-jobs')?.innerText.includes('succeeded')", timeout=30000)
            page.locator("#recent-jobs").get_by_text("succeeded", exact=True).locator("visible=true").first.click()
            page.wait_for_selector("#recent-file td.filename[aria-label$='-lipsync.mp4']", timeout=60000)
            page.wait_for_function("document.querySelector('#recent-video video')?.readyState >= 1", timeout=60000)
            page.goto(service.base + page.locator("#signed-in a", has_text="Sign out").get_attribute("href"))
            page.goto(f"{service.base}/ui/")
            page.wait_for_selector("input[type=password]", timeout=30000)  # signed out: the sign-in form again
        finally:
            browser.close()
    with service.client() as api:  # the UI used the API under the key's tenant
        assert any(j["status"] == "succeeded" for j in api.get("/v1/jobs").json()["jobs"])


def test_two_browsers_generate_at_once_and_each_page_shows_cancel_history_and_the_weights(service, media, long_speech):
    """Gradio's default (one call per event at a time) held the second user's job back until the
    first finished; the UI only submits and polls, so both jobs must be at the service together."""
    from playwright.sync_api import sync_playwright

    with service.client() as api:
        before = {j["id"] for j in api.get("/v1/jobs", params={"limit": 200}).json()["jobs"]}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS, headless=True)
        try:
            pages = [browser.new_context().new_page() for _ in range(2)]  # two users: separate sessions
            for page in pages:
                ui_sign_in(page, service.base)
                page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('Ready')", timeout=60000)
                assert "RANDOM" in page.locator("#model-status").inner_text()  # the weights are named where users look
                page.locator("#face-file input[type=file]").set_input_files(str(media["clip"]))
                page.locator("#audio-file input[type=file]").set_input_files(str(long_speech))
                page.wait_for_selector("#audio-preview audio, #audio-preview [data-testid]", timeout=30000)  # the speech can be played
            for page in pages:
                page.locator("#submit").click()
            with service.client() as api:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    new = [j for j in api.get("/v1/jobs", params={"limit": 200}).json()["jobs"] if j["id"] not in before]
                    if len(new) == 2:
                        break
                    time.sleep(0.5)
                assert len(new) == 2, new
                first, second = sorted(new, key=lambda j: j["created_at"])
                # both submitted while the first still runs (40 s of speech): not one after the other
                assert first["status"] in ("queued", "running") or first["finished_at"] > second["created_at"], (first, second)
                pages[1].locator("#cancel").click()
                pages[1].wait_for_function("document.querySelector('#job-progress')?.innerText.includes('cancelled')", timeout=120000)
                pages[0].locator("#cancel").click()
                for page in pages:
                    page.reload()
                    page.get_by_role("tab", name="Your recent jobs").click()
                    page.wait_for_function(f"document.querySelector('#recent-jobs')?.innerText.includes('{second['id'][:8]}')",
                                           timeout=60000)
                deadline = time.monotonic() + 60  # a running job stops within a second or so of its cancel
                while (statuses := {api.get(f"/v1/jobs/{j['id']}").json()["status"] for j in new}) != {"cancelled"}:
                    assert time.monotonic() < deadline, statuses
                    time.sleep(0.5)
        finally:
            browser.close()


def test_readyz_understands_dns_urls_as_the_helm_chart_gives_them(triton, tmp_path):
    """The chart sets LIPSYNC_TRITON_URLS=dns://<headless service>:8001; /readyz must resolve it like the client."""
    port = triton.grpc_url.rsplit(":", 1)[1]
    with Service(tmp_path / "data", f"dns://localhost:{port}", workers=0, extra_env={"LIPSYNC_OPS_KEY": "ops"}) as svc:
        ready = httpx.get(f"{svc.base}/readyz", headers={"Authorization": "Bearer ops"})
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["triton"] == {"ok": True, "detail": "ready"}


def test_a_registered_presenter_is_tracked_once_and_its_jobs_skip_detection(service, media, tmp_path):
    import cv2

    with service.client() as api, service.client("key-globex-for-tests") as globex:
        with open(media["clip"], "rb") as f:
            created = api.post("/v1/presenters", files={"face": ("anchor.mp4", f)}, data={"name": "Anchor desk"})
        assert created.status_code == 202, created.text
        presenter = created.json()["id"]
        deadline = time.monotonic() + 300
        while (view := api.get(f"/v1/presenters/{presenter}").json())["status"] == "preparing":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert view["status"] == "ready" and view["frames"] == 50 and view["name"] == "Anchor_desk", view
        assert [p["id"] for p in api.get("/v1/presenters").json()["presenters"]][0] == presenter
        assert globex.get(f"/v1/presenters/{presenter}").status_code == 404  # tenants never see each other's
        with open(media["speech"], "rb") as a:
            theirs = globex.post("/v1/jobs", files={"audio": ("s.wav", a)}, data={"presenter_id": presenter})
        assert theirs.status_code == 404

        with open(media["speech"], "rb") as a:
            job = api.post("/v1/jobs", files={"audio": ("s.wav", a)}, data={"presenter_id": presenter}).json()["id"]
        done = wait_for(api, job)
        assert done["status"] == "succeeded" and done["presenter_id"] == presenter and done["name"] == "Anchor_desk", done
        hits = [json.loads(line) for line in service.log.read_text().splitlines() if '"presenter_cache"' in line]
        assert any(h.get("status") == "hit" for h in hits)  # the job used the faces tracked at registration
        with open(media["speech"], "rb") as a:
            batch = api.post("/v1/batches", files={"audio": ("s.wav", a)}, data={"presenter_ids": f"{presenter},{presenter}"}).json()
        assert len(batch["jobs"]) == 2
        assert wait_for_batch(api, batch["id"])["counts"].get("succeeded") == 2

        blank = tmp_path / "wall.png"
        cv2.imwrite(str(blank), np.full((256, 256, 3), 128, np.uint8))
        with open(blank, "rb") as f:
            faceless = api.post("/v1/presenters", files={"face": ("wall.png", f)}).json()["id"]
        deadline = time.monotonic() + 300
        while (view := api.get(f"/v1/presenters/{faceless}").json())["status"] == "preparing":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert view["status"] == "failed" and "no face found" in view["error"] and "wall" in view["error"], view
        assert "/" not in view["error"].replace("N/A", ""), view  # no server path
        # the hint offers what a registration can take: no box (POST /v1/presenters has no such field)
        assert "box" not in view["error"] and "visible frontal face" in view["error"], view
        with open(media["speech"], "rb") as a:
            refused = api.post("/v1/jobs", files={"audio": ("s.wav", a)}, data={"presenter_id": faceless})
        assert refused.status_code == 422 and "cannot be used" in refused.json()["detail"]

        assert api.delete(f"/v1/presenters/{presenter}").status_code == 204
        assert api.get(f"/v1/presenters/{presenter}").status_code == 404
        assert api.get(f"/v1/jobs/{job}/result").status_code == 200  # its finished jobs keep their results
        assert not list((service.data_dir / "files" / "presenters").rglob(f"{presenter}/face"))


def test_the_api_docs_render_in_chromium_with_the_internet_blocked(service):
    """/docs and /redoc on a private network: every asset comes from the service itself."""
    from urllib.parse import urlparse

    from playwright.sync_api import sync_playwright

    outside = []

    def only_the_service(route):
        if urlparse(route.request.url).netloc == urlparse(service.base).netloc:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.route("**/*", only_the_service)
            page.goto(f"{service.base}/docs")
            page.wait_for_selector(".opblock-summary-path[data-path=\"/v1/jobs\"]", timeout=60000)  # Swagger UI drew the operations
            assert page.locator(".opblock").count() >= 10
            page.goto(f"{service.base}/redoc")
            page.wait_for_function("document.body.innerText.includes('Submit one job')", timeout=60000)  # ReDoc drew them too
        finally:
            browser.close()
    # the one request that leaves: ReDoc's footer logo ("API docs by Redocly"), decoration only
    assert [u for u in outside if u != "https://cdn.redoc.ly/redoc/logo-mini.svg"] == [], outside
