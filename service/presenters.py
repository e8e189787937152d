"""Registered presenters: a video or photo uploaded once, its faces tracked once by a worker (into
the workers' presenter cache), then named by jobs and batches as `presenter_id` instead of being
uploaded again. Listed, deleted and expired per tenant like jobs."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lipsync_triton import log
from lipsync_triton.client.generate import track_presenter
from lipsync_triton.errors import Cancelled, Conflict, InputError, LimitExceeded, LipsyncError, Unavailable
from lipsync_triton.preprocessing.media_sniff import IMAGE, VIDEO, check_upload
from . import storage_keys as keys
from .db import ACTIVE, Job, Presenter, PresenterStatus, new_id, session_scope, tenant_admission, utcnow
from .jobs import _iso, check_capacity, tenant_owned
from .settings import Settings
from .storage import Storage
from .user_errors import tenant_message
from .worker_context import context_for


def register(session: Session, storage: Storage, settings: Settings, tenant: str, face: Path, name: str) -> Presenter:
    """Store the upload (moved, not copied) and record the presenter; a worker tracks its faces.
    Admitted like a job, under the tenant's admission lock: its preparation counts as active work
    (LIPSYNC_MAX_ACTIVE_JOBS_PER_TENANT), and the tenant's presenters are capped in number and bytes."""
    try:
        check_upload(face, "face", (VIDEO, IMAGE))
    except LipsyncError as exc:
        raise InputError(str(exc)) from None
    size = face.stat().st_size
    now, presenter_id = utcnow(), new_id()
    presenter = Presenter(id=presenter_id, tenant=tenant, name=name, status=PresenterStatus.PREPARING, created_at=now,
                          last_used_at=now, face_key=keys.presenter_face(tenant, presenter_id), bytes=size)
    if session.in_transaction():
        session.commit()  # the lock must be the transaction's first statement
    with tenant_admission(session, tenant):
        check_capacity(session, tenant, settings)
        check_presenter_quota(session, tenant, settings, size)
        session.add(presenter)
        session.commit()
    try:
        storage.put_file(face, presenter.face_key, move=True)
    except BaseException:
        session.delete(presenter)
        session.commit()
        raise
    return presenter


def check_presenter_quota(session: Session, tenant: str, settings: Settings, adding_bytes: int) -> None:
    """Refuse (429) a tenant's presenter past LIPSYNC_MAX_PRESENTERS_PER_TENANT or LIPSYNC_MAX_PRESENTER_MB_PER_TENANT."""
    count, stored = session.execute(select(func.count(), func.coalesce(func.sum(Presenter.bytes), 0))
                                    .where(Presenter.tenant == tenant)).one()
    if count + 1 > settings.max_presenters_per_tenant:
        raise LimitExceeded(f"you have {count} presenters; the limit is {settings.max_presenters_per_tenant} per tenant "
                         "(LIPSYNC_MAX_PRESENTERS_PER_TENANT): delete one you no longer use")
    quota = int(settings.max_presenter_mb_per_tenant * 2**20)
    if stored + adding_bytes > quota:
        raise LimitExceeded(f"your presenters would take {(stored + adding_bytes) / 2**20:.0f} MB; the limit is "
                         f"{settings.max_presenter_mb_per_tenant:g} MB per tenant (LIPSYNC_MAX_PRESENTER_MB_PER_TENANT): "
                         "delete presenters you no longer use or upload a shorter or smaller video")


def tenant_presenter(session: Session, tenant: str, presenter_id: str) -> Presenter:
    return tenant_owned(session, Presenter, tenant, presenter_id, "presenter")


def usable(presenter: Presenter) -> Presenter:
    """A presenter a job may use: not one whose tracking failed."""
    if presenter.status == PresenterStatus.FAILED:
        raise InputError(f"presenter {presenter.id} cannot be used: {presenter.error}")
    return presenter


def presenter_view(presenter: Presenter) -> dict:
    return {"id": presenter.id, "name": presenter.name, "status": presenter.status, "error": presenter.error,
            "frames": presenter.frames, "created_at": _iso(presenter.created_at), "last_used_at": _iso(presenter.last_used_at),
            "links": {"self": f"/v1/presenters/{presenter.id}"}}


def delete(session: Session, storage: Storage, presenter: Presenter) -> None:
    """Delete it and its file; refused while queued or running jobs still read it."""
    active = session.scalar(select(func.count()).select_from(Job).where(Job.presenter_id == presenter.id, Job.status.in_(ACTIVE)))
    if active:
        raise Conflict(f"presenter {presenter.id} is used by {active} queued or running jobs; cancel them or wait")
    storage.delete(keys.presenter_face(presenter.tenant, presenter.id))
    session.delete(presenter)
    session.commit()


def prepare(presenter_id: str, settings: Settings) -> None:
    """The worker's task: track the presenter's faces into this worker's presenter cache. A face-less
    or unreadable presenter is marked failed with one line; Triton being down is waited out (the
    outage budget), then retried by the queue."""
    context = context_for(settings)
    with session_scope(settings.database) as s:
        presenter = s.get(Presenter, presenter_id)
        if presenter is None:
            return  # deleted meanwhile
        face_key, name = presenter.face_key, presenter.name
    status, frames, error = PresenterStatus.READY, None, None
    with context.work_dir("presenter-") as work:
        try:
            context.storage.get_file(face_key, work / "face")
            frames = track_presenter(work / "face", settings.triton, context.generate_options())
        except (Unavailable, Cancelled):
            raise
        except LipsyncError as exc:
            status, error = PresenterStatus.FAILED, tenant_message(exc, work, name, where="presenter")[:500]
    with session_scope(settings.database) as s:
        presenter = s.get(Presenter, presenter_id)
        if presenter is not None:
            presenter.status, presenter.frames, presenter.error = status, frames or None, error
    log.event("presenter_prepared", presenter=presenter_id, status=status, frames=frames, error=error)
