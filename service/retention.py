"""Retention: the files of jobs older than N days are deleted and the jobs marked expired; presenters
unused that long go too; expired jobs' rows are purged after a grace period.

It works in small batches: each reads a few rows in a short transaction, deletes their files with
no transaction open (storage can be slow; nothing in the database waits on it, migrations
included), then marks them in another short one. Files go first: a video of a person never
outlives the policy because a database write failed (the next sweep marks the job)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, exists, select

from lipsync_triton import log
from . import storage_keys as keys
from .db import ACTIVE, Batch, Job, JobStatus, Presenter, session_scope, utcnow
from .lifecycle import transition
from .settings import Settings
from .storage import Storage

BATCH_ROWS = 200
_EXPIRING = [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]


def expire_old(settings: Settings, days: float | None = None, batch_rows: int = BATCH_ROWS) -> int:
    """Delete the files of finished jobs older than `days` (default: the setting) and presenters no
    job used that long, then purge expired rows past the grace period; returns how many jobs and
    presenters expired."""
    days = settings.retention_days if days is None else days
    cutoff = utcnow() - dt.timedelta(days=days)
    storage = Storage(settings.storage, settings.s3_endpoint_url)
    expired = _expire_jobs(settings.database, storage, cutoff, batch_rows) + _expire_presenters(settings.database, storage,
                                                                                                cutoff, batch_rows)
    purged = purge_expired(settings.database, cutoff - dt.timedelta(days=settings.purge_expired_days), batch_rows)
    log.event("retention", days=days, expired=expired, purged=purged)
    return expired


def _expire_jobs(db: str, storage: Storage, cutoff: dt.datetime, batch_rows: int) -> int:
    expired = 0
    while True:
        with session_scope(db) as s:
            rows = s.execute(select(Job.id, Job.tenant, Job.status, Job.result_key, Job.thumbnail_key)
                             .where(Job.created_at <= cutoff, Job.status.in_(_EXPIRING)).limit(batch_rows)).all()
        if not rows:
            return expired
        for row in rows:  # no transaction open
            for key in (row.result_key, row.thumbnail_key):
                if key:
                    storage.delete(key)
            storage.delete(keys.job_inputs(row.tenant, row.id))
        with session_scope(db) as s:
            marked = sum(transition(s, row.id, JobStatus.EXPIRED, expect=row.status, result_key=None, thumbnail_key=None,
                                    face_key=None, audio_key=None) for row in rows)
        if not marked:
            return expired  # another sweep (`lipsync retention`) marked them meanwhile
        expired += marked


def _expire_presenters(db: str, storage: Storage, cutoff: dt.datetime, batch_rows: int) -> int:
    """Presenters no job has used for the retention period (never one a queued or running job reads)."""
    in_use = exists().where(Job.presenter_id == Presenter.id, Job.status.in_(ACTIVE))
    expired = 0
    while True:
        with session_scope(db) as s:
            rows = s.execute(select(Presenter.id, Presenter.tenant).where(Presenter.last_used_at <= cutoff, ~in_use)
                             .limit(batch_rows)).all()
        if not rows:
            return expired
        for row in rows:
            storage.delete(keys.presenter_face(row.tenant, row.id))
        with session_scope(db) as s:
            expired += s.execute(delete(Presenter).where(Presenter.id.in_([r.id for r in rows]), Presenter.last_used_at <= cutoff,
                                                         ~in_use).execution_options(synchronize_session=False)).rowcount


def purge_expired(db: str, before: dt.datetime, batch_rows: int = BATCH_ROWS) -> int:
    """Delete expired jobs created before `before` (their files went long ago), then batches left
    empty; the finished counters keep counting them."""
    purged = 0
    while True:
        with session_scope(db) as s:
            ids = list(s.scalars(select(Job.id).where(Job.status == JobStatus.EXPIRED, Job.created_at <= before).limit(batch_rows)))
            if not ids:
                break
            purged += s.execute(delete(Job).where(Job.id.in_(ids), Job.status == JobStatus.EXPIRED)
                                .execution_options(synchronize_session=False)).rowcount
    with session_scope(db) as s:
        s.execute(delete(Batch).where(Batch.created_at <= before, ~exists().where(Job.batch_id == Batch.id))
                  .execution_options(synchronize_session=False))
    return purged
