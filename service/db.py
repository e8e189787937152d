"""Job state in SQL (SQLite by default, PostgreSQL for scale-out) through SQLAlchemy; the schema is
owned by the Alembic migrations in `migrations/` (applied by `schema.migrate`: `lipsync migrate`)."""
from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid
from enum import StrEnum
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, event, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

class JobStatus(StrEnum):
    """A job's state (stored and shown as its value). queued -> running -> succeeded | failed |
    cancelled; any finished job -> expired once retention deleted its files."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


    def can_become(self, other: "JobStatus") -> bool:
        """The one table of a job's life (lifecycle.transition refuses anything else)."""
        return other in _NEXT[self]


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)
COUNTED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)  # finished_counts' outcomes
_NEXT: dict[JobStatus, frozenset[JobStatus]] = {
    # queued -> failed: the outage budget ran out before a worker could start it
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    # running -> queued: handed back (worker stopping or presumed dead, a retry, a model update)
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.EXPIRED}),
    JobStatus.FAILED: frozenset({JobStatus.EXPIRED}),
    JobStatus.CANCELLED: frozenset({JobStatus.EXPIRED}),
    JobStatus.EXPIRED: frozenset(),
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class PresenterStatus(StrEnum):
    """preparing (faces being tracked) -> ready | failed."""

    PREPARING = "preparing"
    READY = "ready"
    FAILED = "failed"


class Presenter(Base):
    """A presenter video or photo registered once: its faces are tracked when it arrives (the
    workers' presenter cache), and jobs refer to it by id instead of uploading it again."""

    __tablename__ = "presenters"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default=PresenterStatus.PREPARING)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    face_key: Mapped[str] = mapped_column(String(300))
    frames: Mapped[int | None] = mapped_column(Integer, nullable=True)  # frames whose faces are tracked
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the stored file's size (the tenant's quota)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)  # retention counts from here


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True, nullable=True)
    item: Mapped[int | None] = mapped_column(Integer, nullable=True)  # position in its batch
    name: Mapped[str] = mapped_column(String(200), default="")  # the presenter's display name (sanitised)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    warning: Mapped[str | None] = mapped_column(Text, nullable=True)  # a succeeded job's (silent speech, ...)
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    face_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    audio_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    result_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    thumbnail_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    run_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # set when it succeeds
    queue_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    traceparent: Mapped[str | None] = mapped_column(String(55), nullable=True)  # W3C trace context, sent to Triton
    weights: Mapped[str | None] = mapped_column(String(80), nullable=True)  # the Wav2Lip weights that made the result
    presenter_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)  # a registered presenter's
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the client's: one job per key

    __table_args__ = (UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),)


class FinishedCount(Base):
    """Jobs that finished, per tenant and outcome, counted when they finish: Prometheus counters
    that never go down when a job is deleted or expires (the jobs table holds current states)."""

    __tablename__ = "finished_counts"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)  # succeeded | failed | cancelled
    jobs: Mapped[int] = mapped_column(Integer, default=0)
    run_s: Mapped[float] = mapped_column(Float, default=0.0)  # summed over succeeded jobs
    queue_s: Mapped[float] = mapped_column(Float, default=0.0)


class Sweep(Base):
    """When a deployment-wide sweep last ran: of all workers, the one whose conditional UPDATE moves
    `last_run_at` forward runs it (`claim_sweep`)."""

    __tablename__ = "sweeps"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    last_run_at: Mapped[dt.datetime] = mapped_column(DateTime)


def claim_sweep(url: str, name: str, every_s: float) -> bool:
    """True for exactly one caller per `every_s` across every process sharing the database."""
    now = utcnow()
    with session_scope(url) as s:
        if s.get(Sweep, name) is None:
            s.execute(_upsert(s, Sweep.__table__).values(name=name, last_run_at=dt.datetime(2000, 1, 1))
                      .on_conflict_do_nothing(index_elements=["name"]))
        return s.execute(update(Sweep).where(Sweep.name == name, Sweep.last_run_at <= now - dt.timedelta(seconds=every_s))
                         .values(last_run_at=now).execution_options(synchronize_session=False)).rowcount == 1


def _upsert(session: Session, table):
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def count_finished(session: Session, tenant: str, status: str, run_s: float | None = None, queue_s: float | None = None) -> None:
    """Add one finished job to the counters, in the caller's transaction (the one that finished it)."""
    row = {"tenant": tenant, "status": str(status), "jobs": 1, "run_s": run_s or 0.0, "queue_s": queue_s or 0.0}
    table = FinishedCount.__table__
    statement = _upsert(session, table).values(**row)
    session.execute(statement.on_conflict_do_update(
        index_elements=["tenant", "status"],
        set_={"jobs": table.c.jobs + 1, "run_s": table.c.run_s + row["run_s"], "queue_s": table.c.queue_s + row["queue_s"]}))


_SQLITE_WRITERS: dict[str, threading.Lock] = {}  # one per SQLite database this process writes


@contextmanager
def tenant_admission(session: Session, tenant: str) -> Iterator[None]:
    """Serialise the tenant's admissions for the block, which must end its transaction (commit or
    rollback; an error rolls it back here).

    PostgreSQL: a transaction-level advisory lock on the tenant's name. SQLite: the database's write
    lock, taken at once by a write that changes nothing (it must be the transaction's first
    statement, or a concurrent commit fails it instead of waiting), and before it a lock of this
    process: SQLite's busy handler polls a taken write lock with sleeps of up to 100 ms, so 60
    threads of one API process contending for it waited seconds for a lock held for milliseconds
    (measured: p50 310 ms, max 1.75 s per admission in a burst of 60 submits); queued on a process
    lock they take it in turn, and only other processes' writes meet the busy handler."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        process_lock = contextlib.nullcontext()
        take = text("SELECT pg_advisory_xact_lock(hashtext(:key))").bindparams(key=f"lipsync-admit:{tenant}")
    elif dialect == "sqlite":
        process_lock = _SQLITE_WRITERS.setdefault(str(session.get_bind().url), threading.Lock())
        take = text("UPDATE batches SET tenant = tenant WHERE 1 = 0")
    else:
        raise NotImplementedError(f"no admission lock for {dialect}; use PostgreSQL or SQLite")
    with process_lock:
        try:
            session.connection().execute(take)  # Core, not the ORM's execute: a statement without entities
            yield
        except BaseException:
            session.rollback()
            raise


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL: the API reads while workers write; busy_timeout: writers wait for each other instead of
    # failing; synchronous=NORMAL: in WAL mode a commit needs no fsync (SQLite's advice for WAL): the
    # database stays consistent on power loss but may lose the last commits. Writers hold the lock
    # for microseconds instead of an fsync each, which is what a burst of submits waits on.
    # (PostgreSQL is the database for deployments that must not lose an accepted job.)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)  # a restarted database: stale connections are replaced
    return engine


@lru_cache(maxsize=4)
def _session_factory(url: str) -> sessionmaker:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def new_session(url: str) -> Session:
    """A session (no connection is taken until its first statement)."""
    return _session_factory(url)()


def end_session(session: Session, succeeded: bool) -> None:
    """Commit (or, after an error, roll back) and close: the end of `session_scope`."""
    try:
        if session.in_transaction():  # a commit outside one would begin one only to end it
            session.commit() if succeeded else session.rollback()
    finally:
        session.close()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on error."""
    session = new_session(url)
    try:
        yield session
    except BaseException:
        end_session(session, succeeded=False)
        raise
    end_session(session, succeeded=True)
