"""Registered presenters: a video or photo uploaded once, its faces tracked once by a worker (into
the workers' presenter cache), then named by jobs and batches as `presenter_id` instead of being
uploaded again. Listed, deleted and expired per tenant like jobs."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lipsync_triton import log
from lipsync_triton.client.generate import GenerateOptions, track_presenter
from lipsync_triton.errors import LipsyncError, TransientError
from lipsync_triton.preprocessing.media_sniff import IMAGE, VIDEO, check_upload
from . import storage_keys as keys
from .db import ACTIVE, Job, Presenter, PresenterStatus, new_id, session_scope, utcnow
from .jobs import InputError, _iso, tenant_owned
from .settings import Settings
from .storage import Storage
from .user_errors import user_facing


def register(session: Session, storage: Storage, tenant: str, face: Path, name: str) -> Presenter:
    """Store the upload (moved, not copied) and record the presenter; a worker tracks its faces."""
    try:
        check_upload(face, "face", (VIDEO, IMAGE))
    except LipsyncError as exc:
        raise InputError(str(exc)) from None
    now, presenter_id = utcnow(), new_id()
    presenter = Presenter(id=presenter_id, tenant=tenant, name=name, status=PresenterStatus.PREPARING, created_at=now,
                          last_used_at=now, face_key=keys.presenter_face(tenant, presenter_id))
    storage.put_file(face, presenter.face_key, move=True)
    session.add(presenter)
    session.commit()
    return presenter


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
        raise InputError(f"presenter {presenter.id} is used by {active} queued or running jobs; cancel them or wait", 409)
    storage.delete(keys.presenter_face(presenter.tenant, presenter.id))
    session.delete(presenter)
    session.commit()


def prepare(presenter_id: str, settings: Settings) -> None:
    """The worker's task: track the presenter's faces into this worker's presenter cache. A face-less
    or unreadable presenter is marked failed with one line; Triton being down is retried by the queue."""
    storage = Storage(settings.storage, settings.s3_endpoint_url)
    with session_scope(settings.database) as s:
        presenter = s.get(Presenter, presenter_id)
        if presenter is None:
            return  # deleted meanwhile
        face_key, name = presenter.face_key, presenter.name
    (settings.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="presenter-", dir=settings.data_dir / "tmp"))
    status, frames, error = PresenterStatus.READY, None, None
    try:
        storage.get_file(face_key, work / "face")
        options = GenerateOptions(cache_dir=settings.data_dir / "presenters", retry_seconds=settings.triton_retry_s,
                                  limits=settings.media_limits)
        frames = track_presenter(work / "face", settings.triton, options)
    except TransientError:
        raise
    except LipsyncError as exc:
        status, error = PresenterStatus.FAILED, user_facing(str(exc).splitlines()[0], work, name)[:500]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with session_scope(settings.database) as s:
        presenter = s.get(Presenter, presenter_id)
        if presenter is not None:
            presenter.status, presenter.frames, presenter.error = status, frames or None, error
    log.event("presenter_prepared", presenter=presenter_id, status=status, frames=frames, error=error)
