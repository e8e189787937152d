"""Jobs and batches: creation with input checks (ffprobe on the content, never the name), state
changes, and the JSON views. Shared by the REST API, the web UI and nothing else."""
from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from lipsync_triton.errors import LipsyncError
from lipsync_triton.preprocessing.media_probe import probe_media
from .db import ACTIVE, Batch, Job, new_id, utcnow
from .job_options import JobOptions
from .settings import Settings
from .storage import Storage


class InputError(LipsyncError):
    """A request the service must refuse (HTTP 4xx)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def display_name(filename: str | None, fallback: str) -> str:
    """A user's file name reduced to a safe display stem (results in archives are named with it)."""
    stem = Path((filename or "").replace("\\", "/").split("/")[-1]).stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:60]
    return cleaned or fallback


def check_inputs(face: Path, audio: Path, settings: Settings) -> None:
    """The presenter must be a video or image and the speech must hold audio, within the limits."""
    try:
        face_info = probe_media(face)
    except LipsyncError:
        raise InputError("face is not a readable video or image; upload an mp4/mov/webm video or a jpg/png photo") from None
    if not face_info.has_video or face_info.width <= 0:
        raise InputError("face holds no video or image stream; upload a presenter video or photo")
    if face_info.width * face_info.height > 8192 * 8192:
        raise InputError(f"face is {face_info.width}x{face_info.height}; the largest accepted is 8192x8192 pixels")
    try:
        audio_info = probe_media(audio)
    except LipsyncError:
        raise InputError("audio is not a readable media file; upload a wav/mp3/m4a speech track") from None
    if not audio_info.has_audio:
        raise InputError("audio holds no audio stream; upload a speech track")
    for what, info in (("face", face_info), ("audio", audio_info)):
        seconds = info.video_duration or info.audio_duration or info.duration
        if not info.is_image and seconds > settings.max_media_seconds:
            raise InputError(f"{what} lasts {seconds:.0f} s; the limit is {settings.max_media_seconds:.0f} s "
                             "(LIPSYNC_MAX_MEDIA_SECONDS)", 413)


def check_capacity(session: Session, tenant: str, settings: Settings, adding: int = 1) -> None:
    active = session.query(Job).filter(Job.tenant == tenant, Job.status.in_(ACTIVE)).count()
    if active + adding > settings.max_active_jobs_per_tenant:
        raise InputError(f"{active} jobs already queued or running; the limit is {settings.max_active_jobs_per_tenant} "
                         "per tenant (LIPSYNC_MAX_ACTIVE_JOBS_PER_TENANT): wait for some to finish", 429)


def check_webhook(url: str | None, settings: Settings) -> str | None:
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise InputError("webhook_url must be an http(s) URL")
    if host not in settings.allowed_webhook_hosts:
        raise InputError(f"webhook host {host} is not allowed; the operator lists allowed hosts in LIPSYNC_WEBHOOK_HOSTS")
    return url


def new_job(session: Session, storage: Storage, settings: Settings, tenant: str, face: Path, audio: Path,
            options: JobOptions, name: str, *, batch_id: str | None = None, item: int | None = None,
            webhook_url: str | None = None, fail_softly: bool = False) -> Job:
    """A queued job with its inputs stored; with `fail_softly` (batch items) a bad input gives a
    failed job instead of an error, so one bad item never stops the rest."""
    job = Job(id=new_id(), tenant=tenant, batch_id=batch_id, item=item, name=name, status="queued", progress=0.0,
              options=options.model_dump(mode="json"), webhook_url=webhook_url, attempts=0, cancel_requested=False,
              created_at=utcnow())
    try:
        check_inputs(face, audio, settings)
    except InputError as exc:
        if not fail_softly:
            raise
        job.status, job.error, job.finished_at = "failed", str(exc), utcnow()
        session.add(job)
        return job
    job.face_key, job.audio_key = f"inputs/{tenant}/{job.id}/face", f"inputs/{tenant}/{job.id}/audio"
    storage.put_file(face, job.face_key)
    storage.put_file(audio, job.audio_key)
    session.add(job)
    return job


def failed_job(session: Session, tenant: str, options: JobOptions, name: str, error: str, *, batch_id: str | None = None,
               item: int | None = None) -> Job:
    """A batch item refused before it ran (bad archive member, bad option): recorded, never queued."""
    now = utcnow()
    job = Job(id=new_id(), tenant=tenant, batch_id=batch_id, item=item, name=name, status="failed", progress=0.0,
              error=error, options=options.model_dump(mode="json"), attempts=0, cancel_requested=False, created_at=now,
              finished_at=now)
    session.add(job)
    return job


def new_batch(session: Session, tenant: str) -> Batch:
    batch = Batch(id=new_id(), tenant=tenant, created_at=utcnow())
    session.add(batch)
    return batch


def tenant_job(session: Session, tenant: str, job_id: str) -> Job:
    """The tenant's job or 404: another tenant's job is indistinguishable from a missing one."""
    job = session.get(Job, job_id) if re.fullmatch(r"[0-9a-f]{32}", job_id or "") else None
    if job is None or job.tenant != tenant:
        raise InputError(f"no job {job_id[:40]}", 404)
    return job


def tenant_batch(session: Session, tenant: str, batch_id: str) -> Batch:
    batch = session.get(Batch, batch_id) if re.fullmatch(r"[0-9a-f]{32}", batch_id or "") else None
    if batch is None or batch.tenant != tenant:
        raise InputError(f"no batch {batch_id[:40]}", 404)
    return batch


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
            "name": job.name, "batch_id": job.batch_id, "item": job.item, "options": job.options, "attempts": job.attempts,
            "frames": job.frames, "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at), "timings": timings, "links": {"self": base, "cancel": f"{base}/cancel"}}
    if job.status == "succeeded":
        view["links"] |= {"result": f"{base}/result", "thumbnail": f"{base}/thumbnail"}
    return view


def request_cancel(session: Session, job: Job) -> None:
    """A queued job is cancelled at once; a running one within seconds (its worker polls the flag)."""
    if job.status == "queued":
        job.status, job.finished_at = "cancelled", utcnow()
    elif job.status == "running":
        job.cancel_requested = True
