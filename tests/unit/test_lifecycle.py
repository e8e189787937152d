"""The job core in process: the lifecycle's transitions, errors by cause and their tables, what a
tenant reads, the sweeps' per-period claim, retention in batches (SQLite; PostgreSQL in
test_job_core.py)."""
from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from lipsync_triton.client.face_tracking import TrackingSpec
from lipsync_triton.errors import (Cancelled, Conflict, Gone, InputError, LimitExceeded, LipsyncError, ModelChanged, NotFound,
                                   ServerUnavailable, TooLarge, Unavailable, exit_code, http_status)
from lipsync_triton.preprocessing.media_input import MediaTooLong
from lipsync_triton.service.db import FinishedCount, Job, JobStatus, claim_sweep, new_id, session_scope, utcnow
from lipsync_triton.service.lifecycle import transition
from lipsync_triton.service.retention import expire_old
from lipsync_triton.service.schema import check_schema, migrate
from lipsync_triton.service.settings import Settings
from lipsync_triton.service.user_errors import tenant_message


@pytest.fixture()
def settings(tmp_path) -> Settings:
    settings = Settings(data_dir=tmp_path)
    migrate(settings.database)
    return settings


def _job(settings: Settings, status: JobStatus = JobStatus.QUEUED, **values) -> str:
    job = Job(**{"id": new_id(), "tenant": "acme", "name": "talk", "status": status, "options": {}, "attempts": 0,
                 "cancel_requested": False, "progress": 0.0, "created_at": utcnow(), **values})
    with session_scope(settings.database) as s:
        s.add(job)
    return job.id


def _status(settings: Settings, job_id: str) -> str | None:
    with session_scope(settings.database) as s:
        job = s.get(Job, job_id)
        return job.status if job else None


def test_every_status_change_follows_one_table(settings):
    assert JobStatus.QUEUED.can_become(JobStatus.RUNNING) and JobStatus.RUNNING.can_become(JobStatus.QUEUED)
    assert not JobStatus.SUCCEEDED.can_become(JobStatus.RUNNING)
    assert not JobStatus.EXPIRED.can_become(JobStatus.QUEUED)
    job_id = _job(settings)
    with session_scope(settings.database) as s, pytest.raises(ValueError, match="cannot go from queued to succeeded"):
        transition(s, job_id, JobStatus.SUCCEEDED, expect=JobStatus.QUEUED, tenant="acme")
    with session_scope(settings.database) as s, pytest.raises(ValueError, match="pass its tenant"):
        transition(s, job_id, JobStatus.CANCELLED, expect=JobStatus.QUEUED)
    assert _status(settings, job_id) == "queued"


def test_a_transition_is_conditional_and_counts_a_finished_job_once(settings):
    """A tenant cancelling and a worker claiming at once: exactly one wins; the counter moves once."""
    job_id = _job(settings)
    wins = []
    barrier = threading.Barrier(2)

    def race(to: JobStatus) -> None:
        barrier.wait()
        with session_scope(settings.database) as s:
            if transition(s, job_id, to, expect=JobStatus.QUEUED, tenant="acme"):
                wins.append(to)

    threads = [threading.Thread(target=race, args=(to,)) for to in (JobStatus.CANCELLED, JobStatus.RUNNING)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and _status(settings, job_id) == wins[0]
    with session_scope(settings.database) as s:
        counted = s.get(FinishedCount, ("acme", "cancelled"))
        assert (counted.jobs if counted else 0) == (1 if wins == [JobStatus.CANCELLED] else 0)
        assert s.get(Job, job_id).finished_at is not None or wins == [JobStatus.RUNNING]


def test_a_run_that_lost_its_job_cannot_finish_it(settings):
    job_id = _job(settings, JobStatus.RUNNING, attempts=2)
    with session_scope(settings.database) as s:
        assert not transition(s, job_id, JobStatus.SUCCEEDED, expect=JobStatus.RUNNING, tenant="acme", attempt=1)
        assert transition(s, job_id, JobStatus.SUCCEEDED, expect=JobStatus.RUNNING, tenant="acme", attempt=2)
    assert _status(settings, job_id) == "succeeded"


def test_errors_by_cause_map_to_one_http_status_and_one_exit_code():
    assert [http_status(e("x")) for e in (InputError, LipsyncError, LimitExceeded, TooLarge, NotFound, Conflict, Gone,
                                           Unavailable, ServerUnavailable, ModelChanged, Cancelled)] == \
        [422, 422, 429, 413, 404, 409, 410, 503, 503, 503, 409]
    assert http_status(MediaTooLong("long")) == 413 and http_status(RuntimeError("bug")) == 500
    assert [exit_code(e("x")) for e in (LipsyncError, Unavailable, ServerUnavailable, Cancelled)] == [2, 3, 3, 130]
    assert LipsyncError("x").exit_code == 2 and exit_code(KeyError()) == 1
    # Unavailable is never taken for the input's fault by a handler that catches the input's errors first
    assert not issubclass(Unavailable, InputError) and not issubclass(Cancelled, InputError)


def test_a_tenant_never_reads_an_internal_address_or_path():
    down = ServerUnavailable("cannot reach Triton at 10.1.2.3:8001 (connection refused); start one with `lipsync serve`")
    text = tenant_message(down, outage_s=900)
    assert "15 min" in text and "10.1.2.3" not in text and "8001" not in text
    loading = LipsyncError("inference on wav2lip at triton-0.triton.svc:8001 failed: Request for unknown model")
    assert "triton-0" not in tenant_message(loading) and ":8001" not in tenant_message(loading)
    work = Path("/srv/lipsync/tmp/job-1234")
    named = tenant_message(LipsyncError(f"no face found in {work / 'face'}; pass --box"), work, "anna")
    assert "/srv" not in named and "the presenter anna" in named
    assert tenant_message(RuntimeError("psycopg: connection to 10.0.0.5 failed")) == \
        "internal error; the operator's log has the details"


def test_one_sweeper_of_many_claims_each_period(settings):
    winners = []
    barrier = threading.Barrier(6)

    def sweep() -> None:
        barrier.wait()
        if claim_sweep(settings.database, "retention", 3600):
            winners.append(threading.get_ident())

    threads = [threading.Thread(target=sweep) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert not claim_sweep(settings.database, "retention", 3600)
    assert claim_sweep(settings.database, "retention", 0)  # a period of 0: due again at once


def test_retention_expires_in_batches_then_purges_after_the_grace_period(settings, tmp_path):
    old = utcnow() - dt.timedelta(days=10)
    files = Path(settings.storage)
    ids = []
    for _ in range(5):
        job_id = _job(settings, JobStatus.SUCCEEDED, result_key=f"results/acme/{new_id()}.mp4")
        ids.append(job_id)
        with session_scope(settings.database) as s:
            job = s.get(Job, job_id)
            job.created_at = old
            (files / job.result_key).parent.mkdir(parents=True, exist_ok=True)
            (files / job.result_key).write_bytes(b"video of a person")
    recent = _job(settings, JobStatus.SUCCEEDED)
    assert expire_old(settings, batch_rows=2) == 5
    assert not list((files / "results").rglob("*.mp4"))
    assert {_status(settings, i) for i in ids} == {"expired"} and _status(settings, recent) == "succeeded"
    long_ago = settings.model_copy(update={"purge_expired_days": 0, "retention_days": 5})
    expire_old(long_ago)
    assert {_status(settings, i) for i in ids} == {None}  # rows purged; counters are kept in finished_counts
    assert _status(settings, recent) == "succeeded"


def test_a_database_behind_this_version_is_named_with_the_fix(tmp_path):
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(LipsyncError, match=r"revision none \(an empty database\).*run `lipsync migrate`"):
        check_schema(settings.database)
    migrate(settings.database)
    check_schema(settings.database)


def test_the_presenter_cache_key_ignores_what_is_applied_after_it():
    """The cache stores raw detections; pads and smoothing are applied on each use, so a job with
    other pads hits the cache its presenter's registration filled."""
    from lipsync_triton.preprocessing.video import FrameTransform

    base = dict(detector="sha", detector_size=(480, 640), transform=FrameTransform(1, (0, -1, 0, -1), False), static=False,
                select="largest")
    registered = TrackingSpec(pads=(0, 10, 0, 0), smooth=True, **base)
    job = TrackingSpec(pads=(0, 30, 5, 5), smooth=False, **base)
    assert registered.cache_key_fields() == job.cache_key_fields()
    assert TrackingSpec(pads=(0, 10, 0, 0), smooth=True, **{**base, "select": "index:1"}).cache_key_fields() != \
        registered.cache_key_fields()


def test_batch_results_follow_one_naming_rule(tmp_path):
    """`lipsync batch` and the service's batch ZIP name results alike: `<name>.mp4`, a repeated
    name with its item number, nothing unsafe."""
    from lipsync_triton.service.batch_job import read_manifest
    from lipsync_triton.service.jobs import result_names

    assert result_names([(0, "welcome"), (1, "welcome"), (2, "../x y"), (3, "")]) == \
        ["welcome.mp4", "welcome_1.mp4", "x_y.mp4", "item3.mp4"]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("face,audio,name\np.mp4,s.wav,welcome\np.mp4,s.wav,welcome\n")
    assert [item.name for item in read_manifest(manifest)] == ["welcome", "welcome_1"]
