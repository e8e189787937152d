"""Jobs and batches: creation with input checks (ffprobe on the content, never the name), state
changes, and the JSON views. Shared by the REST API, the web UI and nothing else."""
from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from lipsync_triton.errors import InputError, LimitExceeded, LipsyncError, NotFound
from lipsync_triton.preprocessing.media_sniff import AUDIO, IMAGE, VIDEO, check_upload
from lipsync_triton.tracing import new_traceparent, trace_id
from .db import ACTIVE, Batch, Job, JobStatus, Presenter, PresenterStatus, count_finished, new_id, tenant_admission, utcnow
from . import storage_keys as keys
from .job_options import JobOptions
from .lifecycle import transition
from .settings import Settings
from .storage import Storage



def safe_name(text: str | None, fallback: str) -> str:
    """A name a user gave, reduced to letters, digits, '.', '_' and '-' (results in archives and
    downloads are named with it: no path separator, no '..', no control character survives)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text or "").strip("._")[:60]
    return re.sub(r"\.{2,}", ".", cleaned) or fallback


def result_names(items: list[tuple[int, str]], suffix: str = ".mp4") -> list[str]:
    """The one naming rule of a batch's results (`lipsync batch`'s folder and the service's ZIP):
    `<name>.mp4`, and `<name>_<item>.mp4` for a name an earlier item already took."""
    taken: set[str] = set()
    out = []
    for item, name in items:
        stem = safe_name(name, f"item{item}")
        stem = f"{stem}_{item}" if stem in taken else stem
        taken.add(stem)
        out.append(stem + suffix)
    return out


def display_name(filename: str | None, fallback: str) -> str:
    """A user's file name reduced to a safe display stem."""
    return safe_name(Path((filename or "").replace("\\", "/").split("/")[-1]).stem, fallback)


def check_inputs(face: Path | None, audio: Path, settings: Settings) -> None:
    """What the API checks before it answers: the first bytes of each input (no process started, so
    submits stay fast under load). The worker probes and decodes them as what they are, with the
    limits on frame rate, frame size and length, and fails the job with one line if they are not.
    `face` None: a registered presenter, checked when it was registered."""
    try:
        if face is not None:
            check_upload(face, "face", (VIDEO, IMAGE))
        check_upload(audio, "audio", (AUDIO, VIDEO))
    except LipsyncError as exc:
        raise InputError(str(exc)) from None


# Core, executed on the session's connection: the ORM's execute path costs more than the query itself.
# A tenant's active work in one statement: queued and running jobs plus presenters being prepared
# (a registration makes a worker track every frame: it is work like a job).
_jobs, _presenters = Job.__table__.c, Presenter.__table__.c
_COUNT_ACTIVE = select(
    select(func.count()).where(_jobs.tenant == bindparam("tenant"), _jobs.status.in_([str(s) for s in ACTIVE])).scalar_subquery()
    + select(func.count()).where(_presenters.tenant == bindparam("tenant"),
                                 _presenters.status == str(PresenterStatus.PREPARING)).scalar_subquery())


def check_capacity(session: Session, tenant: str, settings: Settings, adding: int = 1) -> None:
    """Refuse a tenant over its limit of active work: queued and running jobs and presenters being
    prepared (`admit` and presenter registration call it under the tenant's admission lock)."""
    active = session.connection().scalar(_COUNT_ACTIVE, {"tenant": tenant})
    if active + adding > settings.max_active_jobs_per_tenant:
        raise LimitExceeded(f"{active} jobs or presenter preparations already queued or running; the limit is "
                         f"{settings.max_active_jobs_per_tenant} per tenant (LIPSYNC_MAX_ACTIVE_JOBS_PER_TENANT): "
                         "wait for some to finish")


def admit(session: Session, storage: Storage, settings: Settings, tenant: str, jobs: list[Job],
          batch: Batch | None = None) -> Job | None:
    """Count the tenant's active jobs and insert the new ones as ONE step (parallel submits cannot
    all pass the limit): the tenant's admissions are serialised by a lock held until the commit.
    A refused request's stored inputs are deleted. A single job whose Idempotency-Key the tenant
    already used is not added: the earlier job is returned (checked under the same lock, so two
    concurrent retries make one job)."""
    if session.in_transaction():
        session.commit()  # end any earlier read: the lock must be the transaction's first statement

    def discard_inputs() -> None:
        for job in jobs:
            if job.face_key:
                storage.delete(keys.job_inputs(tenant, job.id))

    try:
        with tenant_admission(session, tenant):
            earlier = job_for_key(session, tenant, jobs[0].idempotency_key) if len(jobs) == 1 else None
            if earlier is None:
                check_capacity(session, tenant, settings, adding=sum(job.status in ACTIVE for job in jobs))
                if batch is not None:
                    session.add(batch)  # flushed by the insert below, before its jobs
                # An ORM bulk INSERT: the jobs are written as they are, without the unit of work's
                # bookkeeping (a third of an admission's CPU); they stay plain objects afterwards.
                session.execute(insert(Job), [{c.key: getattr(job, c.key) for c in Job.__table__.columns} for job in jobs])
                for job in jobs:
                    if job.status == JobStatus.FAILED:  # a batch item refused on arrival
                        count_finished(session, tenant, job.status)
            session.commit()
    except LipsyncError:  # over the limit (429) or a bad item: nothing is kept
        discard_inputs()
        raise
    if earlier is not None:
        discard_inputs()
    return earlier


def job_for_key(session: Session, tenant: str, key: str | None) -> Job | None:
    """The tenant's job submitted with this Idempotency-Key, if any."""
    if not key:
        return None
    return session.scalars(select(Job).where(Job.tenant == tenant, Job.idempotency_key == key)).first()


def check_idempotency_key(value: str | None) -> str | None:
    """A client's Idempotency-Key: 1..200 printable ASCII characters (a UUID is typical)."""
    if value is None:
        return None
    if not re.fullmatch(r"[\x21-\x7e]{1,200}", value):
        raise InputError("the Idempotency-Key header must be 1 to 200 printable ASCII characters without spaces (a UUID, say)")
    return value


def new_job(session: Session, storage: Storage, settings: Settings, tenant: str, face: Path | Presenter, audio: Path,
            options: JobOptions, name: str, *, batch_id: str | None = None, item: int | None = None,
            webhook_url: str | None = None, fail_softly: bool = False, traceparent: str | None = None,
            idempotency_key: str | None = None, move_inputs: bool = False) -> Job:
    """A queued job (not yet added: see `admit`) with its inputs stored; with `fail_softly` (batch items) a bad input gives a
    failed job instead of an error, so one bad item never stops the rest. `face` is an uploaded
    file or a registered presenter (whose stored file the job reads; nothing is copied)."""
    presenter = face if isinstance(face, Presenter) else None
    job = Job(id=new_id(), tenant=tenant, batch_id=batch_id, item=item, name=name, status=JobStatus.QUEUED, progress=0.0,
              options=options.model_dump(mode="json"), webhook_url=webhook_url, attempts=0, cancel_requested=False,
              created_at=utcnow(), traceparent=traceparent or new_traceparent(), idempotency_key=idempotency_key,
              presenter_id=presenter.id if presenter else None)
    try:
        check_inputs(None if presenter else face, audio, settings)
    except InputError as exc:
        if not fail_softly:
            raise
        job.status, job.error, job.finished_at = JobStatus.FAILED, str(exc), utcnow()
        return job
    job.audio_key = keys.job_audio(tenant, job.id)
    if presenter is not None:
        job.face_key = presenter.face_key
        presenter.last_used_at = job.created_at
    else:
        job.face_key = keys.job_face(tenant, job.id)
        storage.put_file(face, job.face_key, move=move_inputs)
    storage.put_file(audio, job.audio_key, move=move_inputs)
    return job


def failed_job(session: Session, tenant: str, options: JobOptions, name: str, error: str, *, batch_id: str | None = None,
               item: int | None = None) -> Job:
    """A batch item refused before it ran (bad archive member, bad option): recorded, never queued."""
    now = utcnow()
    job = Job(id=new_id(), tenant=tenant, batch_id=batch_id, item=item, name=name, status=JobStatus.FAILED, progress=0.0,
              error=error, options=options.model_dump(mode="json"), attempts=0, cancel_requested=False, created_at=now,
              finished_at=now)
    return job


def new_batch(session: Session, tenant: str) -> Batch:
    return Batch(id=new_id(), tenant=tenant, created_at=utcnow())


def tenant_owned(session: Session, model, tenant: str, row_id: str, what: str):
    """The tenant's row of `model` (a job, batch, presenter) or 404: another tenant's is
    indistinguishable from a missing one."""
    row = session.get(model, row_id) if re.fullmatch(r"[0-9a-f]{32}", row_id or "") else None
    if row is None or row.tenant != tenant:
        raise NotFound(f"no {what} {(row_id or '')[:40]}")
    return row


def tenant_job(session: Session, tenant: str, job_id: str) -> Job:
    return tenant_owned(session, Job, tenant, job_id, "job")


def tenant_batch(session: Session, tenant: str, batch_id: str) -> Batch:
    return tenant_owned(session, Batch, tenant, batch_id, "batch")


def batch_jobs(session: Session, batch_id: str) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.item)))


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value else None


def job_view(job: Job) -> dict:
    base = f"/v1/jobs/{job.id}"
    timings = {}
    if job.started_at:
        timings["queued_s"] = round((job.started_at - job.created_at).total_seconds(), 3)
    if job.started_at and job.finished_at:
        timings["run_s"] = round((job.finished_at - job.started_at).total_seconds(), 3)
    view = {"id": job.id, "status": job.status, "progress": round(job.progress or 0.0, 4), "error": job.error,
            "warning": job.warning,
            "name": job.name, "batch_id": job.batch_id, "item": job.item, "options": job.options, "attempts": job.attempts,
            "frames": job.frames, "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at), "timings": timings, "links": {"self": base, "cancel": f"{base}/cancel"},
            "trace_id": trace_id(job.traceparent) if job.traceparent else None, "weights": job.weights,
            "presenter_id": job.presenter_id}
    if job.status == JobStatus.SUCCEEDED:
        view["links"] |= {"result": f"{base}/result", "thumbnail": f"{base}/thumbnail"}
    return view


def request_cancel(session: Session, job: Job) -> None:
    """A queued job is cancelled at once; a running one within seconds (its worker polls the flag).
    `job` is refreshed with what the database holds afterwards."""
    if job.status == JobStatus.QUEUED:
        transition(session, job.id, JobStatus.CANCELLED, expect=JobStatus.QUEUED, tenant=job.tenant)
    session.execute(update(Job).where(Job.id == job.id, Job.status == JobStatus.RUNNING).values(cancel_requested=True)
                    .execution_options(synchronize_session=False))
    session.refresh(job)
