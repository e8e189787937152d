"""A job's life, in one place: every status change is `transition()`, a conditional UPDATE on the
job's id and its expected status (and, for a run, its attempt), checked against JobStatus's table
of allowed changes, with the finished counters written in the same transaction.

Because the UPDATE is conditional, of two writers racing (a worker finishing, a tenant cancelling,
retention expiring, a sweep re-queueing) exactly one wins; the other learns it lost from the
return value and acts on that (a superseded run cleans up after itself)."""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import update
from sqlalchemy.orm import Session

from .db import COUNTED, Job, JobStatus, count_finished, utcnow


def transition(session: Session, job_id: str, to: JobStatus, *, expect: JobStatus | Iterable[JobStatus],
               tenant: str | None = None, attempt: int | None = None, where: Iterable[Any] = (), **values: Any) -> bool:
    """Move job `job_id` from one of `expect` to `to` (with `values`) if it is still there; True if
    this call made the change. A counted outcome (succeeded, failed, cancelled) needs `tenant`."""
    sources = (expect,) if isinstance(expect, str) else tuple(expect)
    for source in sources:
        if not JobStatus(source).can_become(to):
            raise ValueError(f"a job cannot go from {source} to {to}")
    if to in COUNTED:
        if tenant is None:
            raise ValueError(f"a job that becomes {to} is counted: pass its tenant")
        values.setdefault("finished_at", utcnow())
    statement = update(Job).where(Job.id == job_id, Job.status.in_([str(s) for s in sources]), *where)
    if attempt is not None:
        statement = statement.where(Job.attempts == attempt)
    changed = session.execute(statement.values(status=to, **values).execution_options(synchronize_session=False)).rowcount == 1
    if changed and to in COUNTED:
        count_finished(session, tenant, to, values.get("run_s"), values.get("queue_s"))
    return changed
