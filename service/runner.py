"""One job on a worker: claim it, fetch its inputs, run the client pipeline against Triton with a
heartbeat and a cancel watch, store result + thumbnail atomically, record the outcome.

Every state change is `lifecycle.transition` on (id, attempt, status): a run whose job was re-queued
(its worker looked dead), cancelled or deleted stops and cleans up after itself instead of
overwriting a newer run. A re-run writes the same keys, so a result is never duplicated.

Failures by cause (errors.py): the input's fail the job at once; Triton unavailable waits (before
the claim at the worker's gate, during the run inside the client) and fails only when the outage
budget is spent; a model update met mid-job hands the job back without using an attempt; other
service errors re-run it with a back-off that grows to minutes, `LIPSYNC_JOB_RETRIES` times."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import update

from lipsync_triton import log
from lipsync_triton.client.generate import generate
from lipsync_triton.errors import Cancelled, LipsyncError, ServerUnavailable, Unavailable, first_line
from lipsync_triton.preprocessing.ffmpeg_pipe import FfmpegProcess
from lipsync_triton.preprocessing.media_input import input_args
from . import storage_keys as keys
from .db import Job, JobStatus, session_scope, utcnow
from .job_options import JobOptions
from .lifecycle import transition
from .storage import Storage
from .user_errors import tenant_message
from .worker_context import context_for

if TYPE_CHECKING:
    from .queue import JobQueue

HEARTBEAT_S = 1.0
RETRY_GROWTH = 4.0  # each re-run after a service error waits this much longer than the one before
RETRY_MAX_DELAY_S = 300.0
_active: dict[str, "Watch"] = {}  # this process's running jobs
_active_lock = threading.Lock()
_releasing = threading.Event()  # the worker is shutting down: running jobs go back to the queue


class Superseded(Exception):
    """This run no longer owns the job (re-queued, cancelled or deleted meanwhile)."""


def _claim(db: str, job_id: str) -> Job | None:
    with session_scope(db) as s:
        now = utcnow()
        claimed = transition(s, job_id, JobStatus.RUNNING, expect=JobStatus.QUEUED, attempts=Job.attempts + 1, started_at=now,
                             heartbeat_at=now, progress=0.0, error=None)
        return s.get(Job, job_id) if claimed else None


def _update(db: str, job: Job, status: JobStatus | None = None, **values) -> bool:
    """Write this run's progress or outcome unless another run superseded it (lifecycle.transition)."""
    with session_scope(db) as s:
        if status is None:  # progress and heartbeat: no change of state, same condition
            return s.execute(update(Job).where(Job.id == job.id, Job.attempts == job.attempts, Job.status == JobStatus.RUNNING)
                             .values(**values).execution_options(synchronize_session=False)).rowcount == 1
        return transition(s, job.id, status, expect=JobStatus.RUNNING, tenant=job.tenant, attempt=job.attempts, **values)


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


def run_job(job_id: str, queue: "JobQueue") -> None:
    context = context_for(queue.settings)
    settings, db, storage = context.settings, context.settings.database, context.storage
    if not context.gate.wait(_releasing):  # shutting down while Triton is away: the job stays queued, handed back
        queue.enqueue_job(job_id)
        return
    job = _claim(db, job_id)
    if job is None:
        return  # cancelled, deleted, finished, or another run holds it
    if job.cancel_requested:
        _update(db, job, JobStatus.CANCELLED)
        return
    started = time.monotonic()
    log.event("job_started", job=job.id, tenant=job.tenant, attempt=job.attempts)
    result_key, thumb_key = keys.job_result(job.tenant, job.id), keys.job_thumbnail(job.tenant, job.id)
    watch = Watch(db, job).start()
    with context.work_dir(f"job-{job.id[:8]}-") as work:
        try:
            face, audio = work / "face", work / "audio"
            storage.get_file(job.face_key, face)
            storage.get_file(job.audio_key, audio)
            options = context.generate_options(**JobOptions(**job.options).generate_kwargs(), traceparent=job.traceparent)
            out = work / "result.mp4"
            result = generate(face, audio, out, settings.triton, options, progress=watch.on_progress, cancel=watch.cancel)
            thumbnail(out, work / "thumb.jpg")
            storage.put_file(out, result_key)
            storage.put_file(work / "thumb.jpg", thumb_key)
            finished = utcnow()
            if watch.superseded or not _update(db, job, JobStatus.SUCCEEDED, progress=1.0, result_key=result_key,
                                               thumbnail_key=thumb_key, frames=result.frames, finished_at=finished,
                                               weights=result.weights, warning="; ".join(result.warnings)[:500] or None,
                                               run_s=(finished - job.started_at).total_seconds(),
                                               queue_s=(job.started_at - job.created_at).total_seconds()):
                raise Superseded()
            log.event("job_succeeded", job=job.id, tenant=job.tenant, seconds=round(time.monotonic() - started, 3),
                      frames=result.frames, frames_per_s=result.frames_per_second, weights=result.weights)
            _notify(job, queue)
        except (Cancelled, Superseded):
            if _releasing.is_set() and not watch.user_cancelled and not watch.superseded:
                _hand_back(db, job, queue, "worker shutting down", attempt_used=False)
                return
            if not _update(db, job, JobStatus.CANCELLED):
                _forget_outputs(db, storage, job, result_key, thumb_key)
            log.event("job_cancelled", job=job.id, tenant=job.tenant)
            _notify(job, queue)
        except ServerUnavailable as exc:  # the outage budget is spent: fail, saying what was down (no address)
            _fail(db, job, queue, tenant_message(exc, outage_s=settings.triton_outage_s), exc)
        except Unavailable as exc:  # a model update met mid-job, or a dependency down: never the job's fault
            _hand_back(db, job, queue, first_line(exc), attempt_used=False, delay=settings.retry_delay_s)
        except LipsyncError as exc:  # the input's fault: no retry
            _fail(db, job, queue, tenant_message(exc, work, job.name), exc)
        except Exception as exc:  # storage or the database unreachable, a bug: re-run with a growing back-off
            if job.attempts > settings.job_retries:
                _fail(db, job, queue, f"the job failed {job.attempts} times on a service error (storage, database or worker); "
                                      "submit it again, and tell the operator if it persists", exc)
            else:
                delay = min(settings.retry_delay_s * RETRY_GROWTH ** (job.attempts - 1), RETRY_MAX_DELAY_S)
                _hand_back(db, job, queue, f"{type(exc).__name__}: {first_line(exc)}", attempt_used=True, delay=delay)
        finally:
            watch.stop()


def _fail(db: str, job: Job, queue: "JobQueue", message: str, exc: BaseException) -> None:
    """Failed for good: the tenant reads `message`; the log keeps the internal detail."""
    _update(db, job, JobStatus.FAILED, error=message[:500])
    log.event("job_failed", job=job.id, tenant=job.tenant, error=f"{type(exc).__name__}: {first_line(exc)}",
              attempts=job.attempts, level="warning")
    _notify(job, queue)


def _hand_back(db: str, job: Job, queue: "JobQueue", reason: str, attempt_used: bool, delay: float = 0.0) -> None:
    """Back to the queue to run again (after `delay`); an attempt is only used when the job's run
    itself failed, never for a worker stopping or a dependency being away."""
    values = {"progress": 0.0, "error": None} | ({} if attempt_used else {"attempts": job.attempts - 1})
    if _update(db, job, JobStatus.QUEUED, **values):
        queue.enqueue_job(job.id, delay=delay)
        log.event("job_requeued", job=job.id, tenant=job.tenant, reason=reason, delay_s=round(delay, 1))


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
