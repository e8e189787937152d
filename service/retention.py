"""Retention: inputs and results older than N days are deleted and their jobs marked expired;
stale running jobs (their worker died) are re-queued."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from lipsync_triton import log
from . import storage_keys as keys
from .db import ACTIVE, FINAL, Job, JobStatus, Presenter, session_scope, utcnow
from .settings import Settings

if TYPE_CHECKING:
    from .queue import JobQueue
from .storage import Storage


def expire_old(settings: Settings, days: float | None = None) -> int:
    """Delete the files of finished jobs older than `days` (default: the setting), and presenters
    unused that long; returns how many."""
    days = settings.retention_days if days is None else days
    cutoff = utcnow() - dt.timedelta(days=days)
    storage = Storage(settings.storage, settings.s3_endpoint_url)
    expired = 0
    with session_scope(settings.database) as s:
        jobs = s.scalars(select(Job).where(Job.created_at <= cutoff, Job.status.in_([f for f in FINAL if f != JobStatus.EXPIRED])))
        for job in jobs:
            for key in (job.result_key, job.thumbnail_key):
                if key:
                    storage.delete(key)
            storage.delete(keys.job_inputs(job.tenant, job.id))
            job.status, job.result_key, job.thumbnail_key, job.face_key, job.audio_key = JobStatus.EXPIRED, None, None, None, None
            expired += 1
        # Presenters no job has used for the retention period go too (not while a job still reads one).
        in_use = select(Job.presenter_id).where(Job.presenter_id.is_not(None), Job.status.in_(ACTIVE))
        for presenter in s.scalars(select(Presenter).where(Presenter.last_used_at <= cutoff, Presenter.id.not_in(in_use))):
            storage.delete(keys.presenter_face(presenter.tenant, presenter.id))
            s.delete(presenter)
            expired += 1
    log.event("retention", days=days, expired=expired)
    return expired


def requeue_stale(settings: Settings, queue: "JobQueue") -> list[str]:
    """Running jobs without a heartbeat for `stale_job_s` lost their worker: back to the queue, once."""
    cutoff = utcnow() - dt.timedelta(seconds=settings.stale_job_s)
    requeued = []
    with session_scope(settings.database) as s:
        candidates = list(s.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)))
        for job_id in candidates:
            # Conditional: of several workers sweeping at once, exactly one re-queues the job.
            if s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)
                         .values(status=JobStatus.QUEUED).execution_options(synchronize_session=False)).rowcount:
                requeued.append(job_id)
    if requeued:
        for job_id in requeued:
            queue.enqueue_job(job_id)
        log.event("jobs_requeued", jobs=",".join(requeued), reason="no heartbeat")
    return requeued
