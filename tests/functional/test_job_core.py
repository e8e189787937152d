"""The job core's promises with real servers: nothing is lost when Redis is flushed, migrations run
from many processes at once, one retention sweep per deployment, one model per job.
(Triton stopped mid-batch: test_faults.py.)"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
import redis

from lipsync_triton.client.generate import generate
from lipsync_triton.client.options import GenerateOptions
from lipsync_triton.client.triton_client import WAV2LIP_MODEL, TritonPool
from lipsync_triton.errors import ModelChanged
from lipsync_triton.serving.server import Ports, TritonServer
from conftest import new_postgres_database, tone
from service_harness import Service, wait_for_batch

FLUSHED_REDIS = "redis://127.0.0.1:6379/11"  # a database of its own: this test flushes it


@pytest.fixture()
def fresh_postgres():
    with new_postgres_database("lipsync_core") as url:
        yield url


def _cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lipsync_triton.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_redis_flushed_with_20_jobs_queued_all_20_finish(triton, media, tmp_path):
    """The rows commit before the enqueue; a flushed (or failed-over) Redis loses the tasks. The
    orphan sweep enqueues queued jobs the queue does not hold, and every job runs once."""
    speech = tone(tmp_path / "speech.wav", 1.0)
    queue = redis.Redis.from_url(FLUSHED_REDIS)
    queue.flushdb()
    env = {"LIPSYNC_QUEUE_URL": FLUSHED_REDIS, "LIPSYNC_ORPHAN_AFTER_S": "2", "LIPSYNC_STALE_JOB_S": "3"}
    with Service(tmp_path / "data", triton.grpc_url, workers=0, extra_env=env) as svc, svc.client() as api:
        with open(media["clip"], "rb") as f, open(speech, "rb") as a:
            face, audio = f.read(), a.read()
        created = api.post("/v1/batches", files=[*[("faces", (f"p{i}.mp4", face)) for i in range(20)], ("audio", ("s.wav", audio))])
        assert created.status_code == 202, created.text
        assert api.get("/metrics").status_code in (200, 401)
        assert queue.dbsize() > 0  # the 20 tasks are in Redis ...
        queue.flushdb()  # ... and now they are not
        worker = subprocess.Popen([sys.executable, "-m", "lipsync_triton.cli", "worker"], env=svc.env,
                                  stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT)
        try:
            done = wait_for_batch(api, created.json()["id"], timeout=900)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    assert [job["status"] for job in done["jobs"]] == ["succeeded"] * 20, done["counts"]
    assert all(job["attempts"] == 1 for job in done["jobs"]), [job["attempts"] for job in done["jobs"]]
    assert "not in the queue" in (tmp_path / "worker.log").read_text()
    queue.flushdb()


@pytest.mark.parametrize("starting_from", [None, "0002"], ids=["fresh", "at-0002"])
def test_four_processes_migrating_at_once_none_crashes(fresh_postgres, starting_from, tmp_path):
    """Four pods starting at once on a fresh database, and on one two revisions behind: the
    migration lock lets one migrate, the others find it done. A worker only checks the revision."""
    from alembic import command

    from lipsync_triton.service.schema import _config, check_schema, current_revision, head_revision

    if starting_from:
        command.upgrade(_config(fresh_postgres), starting_from)
    env = {**__import__("os").environ, "LIPSYNC_DATABASE_URL": fresh_postgres, "LIPSYNC_DATA_DIR": str(tmp_path / "data")}
    if starting_from:  # behind: a worker says what to do instead of migrating (or crashing)
        from lipsync_triton.errors import LipsyncError

        with pytest.raises(LipsyncError, match=r"schema is at revision 0002 .* run `lipsync migrate`"):
            check_schema(fresh_postgres)
    processes = [_cli("migrate", env=env) for _ in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, outputs
    assert sum(f"-> {head_revision()}" in out for out in outputs) == 1, outputs  # one migrated, three found it done
    assert current_revision(fresh_postgres) == head_revision()
    check_schema(fresh_postgres)


def test_three_workers_run_one_retention_sweep_per_period(triton, fresh_postgres, tmp_path):
    """Retention is claimed per period in the database: of three workers sweeping every half
    second, exactly one runs it in an hour's period."""
    env = {**__import__("os").environ, "LIPSYNC_DATABASE_URL": fresh_postgres, "LIPSYNC_DATA_DIR": str(tmp_path / "data"),
           "LIPSYNC_TRITON_URLS": triton.grpc_url, "LIPSYNC_STALE_JOB_S": "1.5", "LIPSYNC_RETENTION_EVERY_S": "3600",
           "LIPSYNC_LOG_FORMAT": "json"}
    assert _cli("migrate", env=env).wait(timeout=300) == 0
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    workers = [subprocess.Popen([sys.executable, "-m", "lipsync_triton.cli", "worker"], env=env, stdout=open(log, "wb"),
                                stderr=subprocess.STDOUT) for log in logs]
    try:
        deadline = time.monotonic() + 180
        while not all('"worker_started"' in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text()[-500:] for log in logs]
            assert all(w.poll() is None for w in workers), [log.read_text()[-500:] for log in logs]
            time.sleep(0.3)
        time.sleep(5)  # each worker's sweeper has run about ten times
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
    sweeps = [log.read_text().count('"event": "retention"') for log in logs]
    assert sum(sweeps) == 1, sweeps


def _with_identity(source, target, sha: str):
    """A copy of a model repository whose Wav2Lip says it is another export (what a re-export on
    one server looks like to a client: another content hash in its config)."""
    shutil.copytree(source, target)
    config = target / WAV2LIP_MODEL / "config.pbtxt"
    text, count = re.subn(r'(key: "model_sha256" value \{ string_value: ")[0-9a-f]+', rf"\g<1>{sha}", config.read_text())
    assert count == 1, config.read_text()
    config.write_text(text)
    return target


def test_a_model_re_exported_on_one_of_two_servers_mid_job_never_mixes_models(exported_repo, media, tmp_path):
    """A rolling update: server B is stopped mid-job and comes back serving another export. The job
    pins the model it started with; B is never used again (its new process answers no request),
    and the job finishes on A with A's weights."""
    speech = tone(tmp_path / "speech.wav", 12.0)
    a = TritonServer(exported_repo, log_path=tmp_path / "a.log").start()
    b_ports = Ports.free()
    b = TritonServer(exported_repo, ports=b_ports, log_path=tmp_path / "b.log").start()
    changed = _with_identity(exported_repo, tmp_path / "reexported", "f" * 64)
    progressed, b_back = threading.Event(), threading.Event()
    outcome: dict = {}

    def progress(done: int, total: int) -> None:
        if done > total * 0.1 and not progressed.is_set():
            progressed.set()
            b_back.wait(300)  # the job holds still while B restarts: its next requests meet the new B at once

    def job() -> None:
        try:
            outcome["result"] = generate(media["clip"], speech, tmp_path / "out.mp4", [a.grpc_url, b.grpc_url],
                                         GenerateOptions(use_cache=False, retry_seconds=120), progress=progress)
        except Exception as exc:  # noqa: BLE001 (the assertion below says which)
            outcome["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    try:
        assert progressed.wait(300), outcome
        b.stop()
        b = TritonServer(changed, ports=b_ports, log_path=tmp_path / "b2.log").start()
        b_back.set()
        thread.join(600)
        assert not thread.is_alive()
        error = outcome.get("error")
        assert error is None or isinstance(error, ModelChanged), repr(error)
        if error is None:
            assert outcome["result"].weights == TritonPool(a.grpc_url).check_ready((WAV2LIP_MODEL,))[WAV2LIP_MODEL].weights
            # its warm-up is its only execution: no request of the job reached it
            assert TritonPool(b.grpc_url).statistics(WAV2LIP_MODEL)["execution_count"] == 1
    finally:
        a.stop()
        b.stop()
