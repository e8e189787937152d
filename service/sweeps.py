"""The sweeps that keep jobs moving, run by every worker's sweeper thread:

- stale: a running job without a heartbeat lost its worker; it goes back to the queue (each row's
  conditional UPDATE makes one worker of many do it).
- orphans: a queued job that the queue does not hold (Redis flushed or failed over, an enqueue
  that failed after the row committed) is enqueued again; claiming is conditional, so a job that
  was held after all runs once.
- retention: once per `LIPSYNC_RETENTION_EVERY_S` for the whole deployment.

Orphans and retention are claimed per period in the database (`claim_sweep`): one worker runs each."""
from __future__ import annotations

import datetime as dt
import threading
from typing import TYPE_CHECKING

from sqlalchemy import select

from lipsync_triton import log
from lipsync_triton.errors import first_line
from .db import Job, JobStatus, claim_sweep, session_scope, utcnow
from .lifecycle import transition
from .retention import expire_old

if TYPE_CHECKING:
    from .queue import JobQueue

ORPHAN_SWEEP_EVERY_S = 60.0
ORPHAN_ROWS = 1000


def requeue_stale(queue: "JobQueue") -> list[str]:
    """Running jobs without a heartbeat for `stale_job_s` lost their worker: back to the queue, once."""
    settings = queue.settings
    cutoff = utcnow() - dt.timedelta(seconds=settings.stale_job_s)
    requeued = []
    with session_scope(settings.database) as s:
        for job_id in list(s.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff))):
            if transition(s, job_id, JobStatus.QUEUED, expect=JobStatus.RUNNING, where=[Job.heartbeat_at < cutoff]):
                requeued.append(job_id)
    for job_id in requeued:
        queue.enqueue_job(job_id)
    if requeued:
        log.event("jobs_requeued", jobs=",".join(requeued), reason="no heartbeat", level="warning")
    return requeued


def requeue_orphans(queue: "JobQueue") -> list[str]:
    """Queued jobs older than `orphan_after_s` that the queue holds neither pending nor scheduled."""
    settings = queue.settings
    cutoff = utcnow() - dt.timedelta(seconds=settings.orphan_after_s)
    with session_scope(settings.database) as s:
        candidates = list(s.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED, Job.created_at < cutoff)
                                    .order_by(Job.created_at).limit(ORPHAN_ROWS)))
    if not candidates:
        return []
    held = queue.waiting_job_ids()
    orphans = [job_id for job_id in candidates if job_id not in held]
    for job_id in orphans:
        queue.enqueue_job(job_id)
    if orphans:
        log.event("jobs_requeued", jobs=",".join(orphans[:50]), count=len(orphans), reason="not in the queue", level="warning")
    return orphans


def sweep_once(queue: "JobQueue") -> None:
    settings = queue.settings
    requeue_stale(queue)
    if claim_sweep(settings.database, "orphans", min(ORPHAN_SWEEP_EVERY_S, settings.orphan_after_s)):
        requeue_orphans(queue)
    if claim_sweep(settings.database, "retention", settings.retention_every_s):
        expire_old(settings)


def run_sweeper(queue: "JobQueue", stop: threading.Event) -> None:
    """A worker's sweeper thread: every third of `stale_job_s`, until `stop`."""
    while not stop.wait(max(0.5, queue.settings.stale_job_s / 3)):
        try:
            sweep_once(queue)
        except Exception as exc:  # a database or Redis restart: try again next time
            log.event("sweep_failed", error=f"{type(exc).__name__}: {first_line(exc, 200)}", level="warning")
