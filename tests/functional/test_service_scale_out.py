"""The scale-out set-up with the same code path: PostgreSQL for job state, Redis for the queue, an
S3-compatible store (moto's server on loopback) for files; a worker as a separate process."""
from __future__ import annotations

import io
import subprocess
import sys
import time
import uuid
import zipfile

import httpx
import pytest
import redis

from conftest import new_postgres_database
from service_harness import Service, free_port, submit, wait_for, wait_for_batch

REDIS_URL = "redis://127.0.0.1:6379/0"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def postgres_db():
    with new_postgres_database("lipsync_test") as url:
        yield url


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint})
    fs.mkdir("lipsync-test")
    yield endpoint, fs
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def scaled_service(triton, postgres_db, s3_server, tmp_path_factory):
    endpoint, _fs = s3_server
    queue = f"lipsync-test-{uuid.uuid4().hex[:8]}"
    env = {**S3_ENV, "LIPSYNC_DATABASE_URL": postgres_db, "LIPSYNC_QUEUE_URL": REDIS_URL, "LIPSYNC_QUEUE_NAME": queue,
           "LIPSYNC_STORAGE_URL": "s3://lipsync-test/service", "LIPSYNC_S3_ENDPOINT_URL": endpoint}
    data = tmp_path_factory.mktemp("scaled") / "api"
    with Service(data, triton.grpc_url, workers=0, extra_env=env) as svc:
        # the worker runs as its own process with its own (empty) data directory: it shares nothing
        # with the API but PostgreSQL, Redis and S3
        worker_env = {**svc.env, "LIPSYNC_DATA_DIR": str(data.parent / "worker")}
        worker = subprocess.Popen([sys.executable, "-m", "lipsync_triton.cli", "worker"], env=worker_env,
                                  stdout=open(data.parent / "worker.log", "wb"), stderr=subprocess.STDOUT)
        try:
            yield svc
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"*{queue}*"):
        client.delete(key)


def test_jobs_run_on_postgres_redis_and_s3(scaled_service, s3_server, media):
    _endpoint, fs = s3_server
    with scaled_service.client() as api:
        job_id = submit(api, media["clip"], media["speech"])
        view = wait_for(api, job_id)
        assert view["status"] == "succeeded", view
        assert fs.exists(f"lipsync-test/service/results/acme/{job_id}.mp4")
        assert not (scaled_service.data_dir / "files").exists()  # nothing on the API's local disk
        part = api.get(f"/v1/jobs/{job_id}/result", headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and part.content[4:8] == b"ftyp" and len(part.content) == 10
        stored = fs.cat_file(f"lipsync-test/service/results/acme/{job_id}.mp4")
        assert part.headers["content-range"] == f"bytes 0-9/{len(stored)}"
        assert api.get(f"/v1/jobs/{job_id}/result", headers={"Range": "bytes=-5"}).content == stored[-5:]
        assert api.get(f"/v1/jobs/{job_id}/result", headers={"Range": f"bytes={len(stored)}-"}).status_code == 416
        whole = api.get(f"/v1/jobs/{job_id}/result")
        assert whole.status_code == 200 and whole.content == stored
        assert int(api.head(f"/v1/jobs/{job_id}/result").headers["content-length"]) == len(stored)
        # streamed from storage: no copy of a person's video on the API's disk, which retention would never see
        assert not [p for p in scaled_service.data_dir.rglob("*") if p.is_file() and p.suffix in (".mp4", ".jpg", ".partial")]
        ready = httpx.get(f"{scaled_service.base}/readyz").json()
        assert ready["ready"] is True, ready


def test_inputs_by_url_only_from_the_tenants_own_prefix(scaled_service, s3_server, media):
    _endpoint, fs = s3_server
    fs.put_file(str(media["clip"]), "lipsync-test/service/tenants/acme/in/p.mp4")
    fs.put_file(str(media["speech"]), "lipsync-test/service/tenants/acme/in/s.wav")
    with scaled_service.client() as api:
        created = api.post("/v1/jobs", data={"face_url": "s3://lipsync-test/service/tenants/acme/in/p.mp4",
                                             "audio_url": "s3://lipsync-test/service/tenants/acme/in/s.wav"})
        assert created.status_code == 202, created.text
        assert wait_for(api, created.json()["id"])["status"] == "succeeded"
    with scaled_service.client("key-globex-for-tests") as globex:
        refused = globex.post("/v1/jobs", data={"face_url": "s3://lipsync-test/service/tenants/acme/in/p.mp4",
                                                "audio_url": "s3://lipsync-test/service/tenants/acme/in/s.wav"})
        assert refused.status_code == 403


def test_a_batch_archive_from_s3(scaled_service, media):
    with scaled_service.client() as api:
        with open(media["clip"], "rb") as f1, open(media["clip"], "rb") as f2, open(media["speech"], "rb") as a:
            created = api.post("/v1/batches", files=[("faces", ("one.mp4", f1)), ("faces", ("two.mp4", f2)),
                                                     ("audio", ("s.wav", a))]).json()
        view = wait_for_batch(api, created["id"])
        assert [j["status"] for j in view["jobs"]] == ["succeeded", "succeeded"]
        names = zipfile.ZipFile(io.BytesIO(api.get(view["links"]["archive"]).content)).namelist()
        assert names == ["one.mp4", "two.mp4"]


def test_concurrent_clients_lose_and_duplicate_nothing_on_postgres_and_redis(scaled_service, tmp_path):
    """The load test's short mode on the scale-out set-up (the full 100-client figures are in
    perf/BENCHMARKS.md): every submitted job listed exactly once, all finished."""
    from lipsync_triton.perf.service_load import run_service_load
    from lipsync_triton.perf.workload import e2e_workload

    face, audio = e2e_workload(tmp_path / "media", 0.4, 160, 96)
    report = run_service_load(scaled_service.base, "key-globex-for-tests", face, audio, clients=20, timeout_s=600)
    assert report["jobs_submitted"] == 20 and report["submit_errors"] == 0
    assert report["final_states"] == {"succeeded": 20}
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["not_final"] == 0
