"""One job on a worker: claim it, fetch its inputs, run the client pipeline against Triton with a
heartbeat and a cancel watch, store result + thumbnail atomically, record the outcome.

Every state change is a conditional UPDATE on (id, attempt, status): a run whose job was re-queued
(its worker looked dead), cancelled or deleted stops and cleans up after itself instead of
overwriting a newer run. A re-run writes the same keys, so a result is never duplicated."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import update

from lipsync_triton import log
from lipsync_triton.client.generate import GenerateOptions, generate
from lipsync_triton.errors import Cancelled, LipsyncError, TransientError
from lipsync_triton.preprocessing.ffmpeg_pipe import FfmpegProcess
from lipsync_triton.preprocessing.media_input import input_args
from . import storage_keys as keys
from .db import FINAL, Job, JobStatus, count_finished, session_scope, utcnow
from .job_options import JobOptions
from .storage import Storage
from .user_errors import user_facing

if TYPE_CHECKING:
    from .queue import JobQueue

HEARTBEAT_S = 1.0
_active: dict[str, "Watch"] = {}  # this process's running jobs
_active_lock = threading.Lock()
_releasing = threading.Event()  # the worker is shutting down: running jobs go back to the queue


class Superseded(Exception):
    """This run no longer owns the job (re-queued, cancelled or deleted meanwhile)."""


def _claim(db: str, job_id: str) -> Job | None:
    with session_scope(db) as s:
        now = utcnow()
        claimed = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                            .values(status=JobStatus.RUNNING, attempts=Job.attempts + 1, started_at=now, heartbeat_at=now,
                                    progress=0.0, error=None).execution_options(synchronize_session=False)).rowcount
        return s.get(Job, job_id) if claimed else None


def _update(db: str, job: Job, **values) -> bool:
    """Write this run's outcome unless another run superseded it; a final state is counted in the
    same transaction (metrics.py's counters)."""
    with session_scope(db) as s:
        done = s.execute(update(Job).where(Job.id == job.id, Job.attempts == job.attempts, Job.status == JobStatus.RUNNING)
                         .values(**values).execution_options(synchronize_session=False)).rowcount == 1
        if done and values.get("status") in FINAL:
            count_finished(s, job.tenant, values["status"], values.get("run_s"), values.get("queue_s"))
        return done


class Watch:
    """Heartbeat + progress writes + cancel polling in one thread (one DB write per second at most)."""

    def __init__(self, db: str, job: Job):
        self.db, self.job = db, job
        self.cancel = threading.Event()
        self.superseded = False
        self.user_cancelled = False
        self.progress = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{job.id[:8]}", daemon=True)

    def start(self) -> "Watch":
        with _active_lock:
            _active[self.job.id] = self
        self._thread.start()
        return self

    def stop(self) -> None:
        """After the outcome is recorded: a shutting-down worker waits for exactly this."""
        self._stop.set()
        self._thread.join()
        with _active_lock:
            _active.pop(self.job.id, None)

    def on_progress(self, done: int, total: int) -> None:
        self.progress = done / max(total, 1)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                alive = _update(self.db, self.job, heartbeat_at=utcnow(), progress=round(min(self.progress, 0.99), 4))
                with session_scope(self.db) as s:
                    current = s.get(Job, self.job.id)
                    wanted = current is not None and current.cancel_requested
            except Exception as exc:  # a database restart: keep working, try again next beat
                log.event("heartbeat_failed", job=self.job.id, error=str(exc).splitlines()[0][:200])
                continue
            if not alive:
                self.superseded = True
            self.user_cancelled = self.user_cancelled or wanted
            if wanted or not alive:
                self.cancel.set()


def thumbnail(video: Path, out: Path) -> Path:
    with FfmpegProcess(["-y", *input_args(video), "-frames:v", "1", "-vf", "scale=320:-2", "-q:v", "4", str(out)]) as ff:
        if ff.finish() != 0:
            raise LipsyncError(f"thumbnail failed: {ff.reason()}")
    return out


def run_job(job_id: str, queue: "JobQueue", last_attempt: bool = True) -> None:
    settings = queue.settings
    db, storage = settings.database, Storage(settings.storage, settings.s3_endpoint_url)
    job = _claim(db, job_id)
    if job is None:
        return  # cancelled, deleted, finished, or another run holds it
    if job.cancel_requested:
        _update(db, job, status=JobStatus.CANCELLED, finished_at=utcnow())
        return
    started = time.monotonic()
    log.event("job_started", job=job.id, tenant=job.tenant, attempt=job.attempts)
    (settings.data_dir / "tmp").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"job-{job.id[:8]}-", dir=settings.data_dir / "tmp"))
    result_key, thumb_key = keys.job_result(job.tenant, job.id), keys.job_thumbnail(job.tenant, job.id)
    watch = Watch(db, job).start()
    try:
        face, audio = work / "face", work / "audio"
        storage.get_file(job.face_key, face)
        storage.get_file(job.audio_key, audio)
        options = GenerateOptions(**JobOptions(**job.options).generate_kwargs(), cache_dir=settings.data_dir / "presenters",
                                  retry_seconds=settings.triton_retry_s, limits=settings.media_limits,
                                  traceparent=job.traceparent)
        out = work / "result.mp4"
        result = generate(face, audio, out, settings.triton, options, progress=watch.on_progress, cancel=watch.cancel)
        thumbnail(out, work / "thumb.jpg")
        storage.put_file(out, result_key)
        storage.put_file(work / "thumb.jpg", thumb_key)
        finished = utcnow()
        if watch.superseded or not _update(db, job, status=JobStatus.SUCCEEDED, progress=1.0, result_key=result_key,
                                           thumbnail_key=thumb_key, frames=result.frames, finished_at=finished, weights=result.weights,
                                           run_s=(finished - job.started_at).total_seconds(),
                                           queue_s=(job.started_at - job.created_at).total_seconds()):
            raise Superseded()
        log.event("job_succeeded", job=job.id, tenant=job.tenant, seconds=round(time.monotonic() - started, 3),
                  frames=result.frames, frames_per_s=result.frames_per_second)
        _notify(job, queue)
    except (Cancelled, Superseded):
        if _releasing.is_set() and not watch.user_cancelled and not watch.superseded:
            if _update(db, job, status=JobStatus.QUEUED, progress=0.0):
                queue.enqueue_job(job.id)
                log.event("job_requeued", job=job.id, tenant=job.tenant, reason="worker shutting down")
            return
        if not _update(db, job, status=JobStatus.CANCELLED, finished_at=utcnow()):
            _forget_outputs(db, storage, job, result_key, thumb_key)
        log.event("job_cancelled", job=job.id, tenant=job.tenant)
        _notify(job, queue)
    except TransientError as exc:  # Triton down or restarting past the client's own retries: the queue retries
        _retry_or_fail(db, job, exc, last_attempt, queue)
    except LipsyncError as exc:  # the input's fault: no retry
        error = user_facing(str(exc).splitlines()[0], work, job.name)
        _update(db, job, status=JobStatus.FAILED, error=error[:500], finished_at=utcnow())
        log.event("job_failed", job=job.id, tenant=job.tenant, error=str(exc).splitlines()[0][:300])
        _notify(job, queue)
    except Exception as exc:  # storage or database unreachable, a server restarting: the queue retries it
        _retry_or_fail(db, job, exc, last_attempt, queue)
    finally:
        watch.stop()
        shutil.rmtree(work, ignore_errors=True)


def _retry_or_fail(db: str, job: Job, exc: Exception, last_attempt: bool, queue: "JobQueue") -> None:
    """A transient failure: back to the queue (Huey runs it again after a delay), or failed for good
    once the retries are spent."""
    message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}" if str(exc) else type(exc).__name__
    if last_attempt:
        _update(db, job, status=JobStatus.FAILED, error=f"{message} (gave up after {job.attempts} attempts)", finished_at=utcnow())
        log.event("job_failed", job=job.id, tenant=job.tenant, error=message, attempts=job.attempts)
        _notify(job, queue)
        return
    _update(db, job, status=JobStatus.QUEUED, error=None)
    log.event("job_retry", job=job.id, tenant=job.tenant, error=message, attempt=job.attempts)
    raise exc


def release_active_runs(timeout: float = 20.0) -> None:
    """Worker shutdown: stop the running jobs and hand them back to the queue (they run again elsewhere)."""
    _releasing.set()
    with _active_lock:
        watches = list(_active.values())
    for watch in watches:
        watch.cancel.set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _active_lock:
            if not _active:
                return
        time.sleep(0.1)


def _forget_outputs(db: str, storage: Storage, job: Job, *keys: str) -> None:
    """A run that lost its job (deleted meanwhile) removes what it uploaded, unless a newer run owns it."""
    with session_scope(db) as s:
        if s.get(Job, job.id) is None:
            for key in keys:
                storage.delete(key)


def _notify(job: Job, queue: "JobQueue") -> None:
    if job.webhook_url and queue.settings.webhook_allow:
        queue.deliver_webhook(job.id)
