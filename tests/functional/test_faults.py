"""Faults with real servers and real processes: Triton killed mid-job (restarted, or not), one of two
Triton servers killed, object storage unreachable for a while and the database restarted, the disk
full while encoding. A job finishes or fails with a clear error; it never hangs, never leaves a
partial file, and is never marked succeeded without its result."""
from __future__ import annotations

import glob
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lipsync_triton.serving.server import Ports, TritonServer
from conftest import tone
from service_harness import Service, submit, wait_for, wait_for_batch, wait_running






def no_partial_files(data: Path) -> None:
    leftovers = [p for p in data.rglob("*") if ".partial" in p.name or p.name.startswith("job-")]
    assert not leftovers, leftovers


@pytest.fixture()
def own_triton(exported_repo, tmp_path):
    """A Triton server this test may kill; restarted on the same ports by `restart()`."""
    ports = Ports.free()
    state = {"server": TritonServer(exported_repo, ports=ports, log_path=tmp_path / "triton.log").start()}

    def restart() -> TritonServer:
        state["server"] = TritonServer(exported_repo, ports=ports, log_path=tmp_path / "triton.log").start()
        return state["server"]

    state["restart"] = restart
    yield state
    state["server"].stop()


def test_triton_killed_mid_job_and_restarted_the_job_finishes(own_triton, media, tmp_path):
    speech = tone(tmp_path / "speech.wav", 12.0)
    with Service(tmp_path / "data", own_triton["server"].grpc_url) as svc, svc.client() as api:
        job_id = submit(api, media["clip"], speech)
        wait_running(api, job_id)
        own_triton["server"].kill()
        time.sleep(2)
        own_triton["restart"]()
        view = wait_for(api, job_id, timeout=300)
        assert view["status"] == "succeeded", view
        assert sorted(p.suffix for p in (svc.data_dir / "files" / "results").rglob(f"{job_id}*")) == [".jpg", ".mp4"]
    no_partial_files(tmp_path / "data")


def test_triton_gone_for_good_fails_the_job_after_the_outage_budget_saying_so(own_triton, media, tmp_path):
    """Unavailability never uses up an attempt: the job fails once the outage budget is spent, with
    a message that says the model servers were unavailable and names no internal address."""
    speech = tone(tmp_path / "speech.wav", 12.0)
    env = {"LIPSYNC_TRITON_OUTAGE_S": "4", "LIPSYNC_JOB_RETRIES": "1"}
    with Service(tmp_path / "data", own_triton["server"].grpc_url, extra_env=env) as svc, svc.client() as api:
        job_id = submit(api, media["clip"], speech)
        wait_running(api, job_id)
        own_triton["server"].kill()
        view = wait_for(api, job_id, timeout=180)
        assert view["status"] == "failed" and view["attempts"] == 1, view
        assert "model servers were unavailable" in view["error"] and "\n" not in view["error"], view["error"]
        assert "127.0.0.1" not in view["error"] and str(own_triton["server"].ports.grpc) not in view["error"]
        assert not list((svc.data_dir / "files" / "results").rglob(f"{job_id}*"))
    no_partial_files(tmp_path / "data")


def test_triton_stopped_for_three_minutes_mid_batch_every_job_finishes(own_triton, media, tmp_path):
    """The chart's default is one Triton replica: a drain, a rollout or an OOM stops it for minutes.
    Six jobs, Triton stopped for 3 minutes once the first runs, then started again on the same
    ports: workers stop taking jobs, running ones wait, and all six succeed on their first attempt."""
    speech = tone(tmp_path / "speech.wav", 6.0)
    with Service(tmp_path / "data", own_triton["server"].grpc_url) as svc, svc.client() as api:
        face, audio = media["clip"].read_bytes(), speech.read_bytes()
        batch = api.post("/v1/batches", files=[*[("faces", (f"p{i}.mp4", face)) for i in range(6)], ("audio", ("s.wav", audio))])
        assert batch.status_code == 202, batch.text
        jobs = [job["id"] for job in batch.json()["jobs"]]
        wait_running(api, jobs[0])
        own_triton["server"].stop()
        stopped = time.monotonic()
        time.sleep(20)
        views = [api.get(f"/v1/jobs/{job_id}").json() for job_id in jobs]
        assert not [v for v in views if v["status"] == "failed"], views
        # While Triton is away no worker takes another job: at most its two threads' jobs are running.
        assert sum(v["status"] == "running" for v in views) <= 2, views
        time.sleep(max(0.0, 180 - (time.monotonic() - stopped)))
        own_triton["restart"]()
        done = wait_for_batch(api, batch.json()["id"], timeout=900)
        views = [api.get(f"/v1/jobs/{job_id}").json() for job_id in jobs]
        assert [v["status"] for v in views] == ["succeeded"] * 6, views
        assert [v["attempts"] for v in views] == [1] * 6, views
        assert done["done"]
    no_partial_files(tmp_path / "data")


def test_one_of_two_triton_servers_killed_mid_job_the_job_completes_on_the_other(own_triton, triton, media, tmp_path):
    speech = tone(tmp_path / "speech.wav", 12.0)
    urls = f"{own_triton['server'].grpc_url},{triton.grpc_url}"
    with Service(tmp_path / "data", urls) as svc, svc.client() as api:
        job_id = submit(api, media["clip"], speech)
        wait_running(api, job_id)
        own_triton["server"].kill()
        view = wait_for(api, job_id, timeout=300)
        assert view["status"] == "succeeded" and view["attempts"] == 1


def test_storage_unreachable_and_database_restarted_nothing_succeeds_without_its_file(triton, media, tmp_path):
    """PostgreSQL + Redis + S3 (moto's server): the S3 server frozen for a while (SIGSTOP: requests
    hang, then resume) and PostgreSQL restarted during a running job."""
    from conftest import PG_ADMIN
    from test_service_scale_out import REDIS_URL, S3_ENV  # the scale-out set-up's servers

    import psycopg
    import s3fs
    import uuid

    from service_harness import free_port

    name = f"lipsync_fault_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint})
        while True:
            try:
                fs.mkdir("faults")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        env = {**S3_ENV, "LIPSYNC_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
               "LIPSYNC_QUEUE_URL": REDIS_URL, "LIPSYNC_QUEUE_NAME": name, "LIPSYNC_STORAGE_URL": "s3://faults/data",
               "LIPSYNC_S3_ENDPOINT_URL": endpoint, "LIPSYNC_STALE_JOB_S": "5", "LIPSYNC_RETRY_DELAY_S": "1"}
        speech = tone(tmp_path / "speech.wav", 10.0)
        with Service(tmp_path / "data", triton.grpc_url, extra_env=env) as svc, svc.client() as api:
            first = submit(api, media["clip"], speech)
            wait_running(api, first)
            moto.send_signal(signal.SIGSTOP)
            time.sleep(4)
            moto.send_signal(signal.SIGCONT)
            second = submit(api, media["clip"], speech)
            wait_running(api, second)
            cluster = sorted(glob.glob("/etc/postgresql/*"))[-1].rsplit("/", 1)[-1]
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"], check=True,
                           capture_output=True)
            for job_id in (first, second):
                view = wait_for(api, job_id, timeout=300)
                assert view["status"] in ("succeeded", "failed"), view
                stored = fs.exists(f"faults/data/results/acme/{job_id}.mp4")
                assert stored == (view["status"] == "succeeded"), (view, stored)
                if view["status"] == "failed":
                    assert view["error"] and "\n" not in view["error"]
            assert api.get("/healthz").status_code == 200
    finally:
        moto.send_signal(signal.SIGCONT)
        moto.terminate()
        moto.wait(timeout=30)
        subprocess.run(["pg_isready", "-h", "127.0.0.1", "-t", "60"], capture_output=True)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_disk_full_while_encoding_is_a_clear_error_and_leaves_nothing(triton, media, tmp_path):
    data = tmp_path / "data"
    work = data / "tmp"
    work.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1800k", "tmpfs", str(work)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        speech = tone(tmp_path / "speech.wav", 30.0)  # ~1 MB in, several MB out: the 1.8 MB disk fills while encoding
        with Service(data, triton.grpc_url) as svc, svc.client() as api:
            job_id = submit(api, media["clip"], speech)
            view = wait_for(api, job_id, timeout=300)
            assert view["status"] == "failed", view
            assert "No space left on device" in view["error"] and "\n" not in view["error"]
            assert list(work.iterdir()) == []  # the job's folder and the partial mp4 are gone
            healthy = submit(api, media["clip"], media["speech"])  # the service keeps serving
            assert wait_for(api, healthy)["status"] == "succeeded"
    finally:
        subprocess.run(["umount", "-l", str(work)], capture_output=True)
