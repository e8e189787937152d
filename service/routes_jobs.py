"""/v1/jobs: submit one job, list, look at, download, cancel and delete the tenant's jobs."""
from __future__ import annotations

import inspect
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from sqlalchemy import func, select

from lipsync_triton import log
from lipsync_triton.client.options import job_options
from . import storage_keys as keys
from .db import Job, JobStatus
from .deps import DB, Svc, Tenant, Work
from .job_options import OPTION_NAMES, JobOptions
from lipsync_triton.tracing import valid_traceparent
from .jobs import (InputError, admit, check_idempotency_key, display_name, job_for_key, job_view, new_job,
                   request_cancel, tenant_job)
from .presenters import tenant_presenter, usable
from .uploads import enqueue, fetch_url, only_fields, save
from .webhooks import check_webhook

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def with_option_fields(endpoint):
    """One optional form field per job option (client/options.py), added to the endpoint's signature:
    FastAPI reads the fields (and documents them) from it, and passes them as keyword arguments."""
    signature = inspect.signature(endpoint)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(d.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[str | None, Form(description=d.spec.help)]) for d in job_options()]
    endpoint.__signature__ = signature.replace(parameters=params)
    return endpoint


@router.post("", status_code=202, summary="Submit one job: presenter video/photo + speech",
             dependencies=[only_fields("face", "audio", "face_url", "audio_url", "presenter_id", "webhook_url", *OPTION_NAMES)])
@with_option_fields
def submit_job(svc: Svc, who: Tenant, db: DB, work: Work,
               face: Annotated[UploadFile | None, File(description="presenter video or photo")] = None,
               audio: Annotated[UploadFile | None, File(description="speech (any audio or video file)")] = None,
               face_url: Annotated[str | None, Form()] = None, audio_url: Annotated[str | None, Form()] = None,
               presenter_id: Annotated[str | None, Form(description="a registered presenter (POST /v1/presenters) instead of face")] = None,
               webhook_url: Annotated[str | None, Form()] = None,
               idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", description=(
                   "a key of yours (a UUID) naming this submission: a retry with the same key returns the first job "
                   "instead of making a second"))] = None,
               traceparent: Annotated[str | None, Header(description="W3C trace context: Triton's spans join this trace")] = None,
               **option_fields: str | None):
    key = check_idempotency_key(idempotency_key)
    if (earlier := job_for_key(db, who, key)) is not None:
        return _accepted(earlier, replayed=True)
    options = JobOptions.parse(option_fields)
    hook = check_webhook(webhook_url, svc.settings)
    if presenter_id and (face or face_url):
        raise InputError("send a face (file or face_url) or a presenter_id, not both")
    presenter = usable(tenant_presenter(db, who, presenter_id)) if presenter_id else None
    face_path = save(face, work / "face") if face else fetch_url(svc, face_url, who, work / "face") if face_url else None
    audio_path = save(audio, work / "audio") if audio else fetch_url(svc, audio_url, who, work / "audio") if audio_url else None
    if (face_path is None and presenter is None) or audio_path is None:
        raise InputError("send both a face (file, face_url or presenter_id) and an audio (file or audio_url)")
    name = presenter.name if presenter else display_name(face.filename if face else face_url, "presenter")
    job = new_job(db, svc.storage, svc.settings, who, presenter or face_path, audio_path, options, name, webhook_url=hook,
                  traceparent=valid_traceparent(traceparent), idempotency_key=key, move_inputs=True)
    if (earlier := admit(db, svc.storage, svc.settings, who, [job])) is not None:
        return _accepted(earlier, replayed=True)  # a concurrent retry with the same key won
    enqueue(svc, [job])
    return _accepted(job)


def _accepted(job: Job, replayed: bool = False) -> JSONResponse:
    headers = {"Location": f"/v1/jobs/{job.id}"} | ({"Idempotent-Replayed": "true"} if replayed else {})
    if job.traceparent:
        headers["traceparent"] = job.traceparent
    return JSONResponse({"id": job.id, "status": job.status}, status_code=202, headers=headers)


@router.get("", summary="The tenant's jobs, newest first")
def list_jobs(who: Tenant, db: DB, limit: Annotated[int, Query(ge=1, le=200)] = 50,
              offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
              status: Annotated[JobStatus | None, Query()] = None):
    where = [Job.tenant == who, *([Job.status == status] if status else [])]
    total = db.scalar(select(func.count()).select_from(Job).where(*where))
    jobs = db.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset))
    return {"jobs": [job_view(j) for j in jobs], "total": total, "limit": limit, "offset": offset}


@router.get("/{job_id}", summary="A job's state, progress, error and links")
def get_job(job_id: str, who: Tenant, db: DB):
    return job_view(tenant_job(db, who, job_id))


def served_file(svc: Svc, key: str | None, job: Job, media_type: str, filename: str) -> FileResponse:
    if job.status == JobStatus.EXPIRED:
        raise InputError("the job's files were deleted by the retention policy", 410)
    if job.status != JobStatus.SUCCEEDED or not key:
        raise InputError(f"job {job.id} has no result yet (status {job.status})", 409)
    path = svc.storage.local_path(key)
    if path is None:  # object storage: a local copy, fetched once, served with range support
        path = svc.settings.data_dir / "cache" / key
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".partial")
            svc.storage.get_file(key, tmp)
            tmp.replace(path)
    if not path.exists():
        raise InputError(f"job {job.id}'s file is missing from storage", 410)
    return FileResponse(path, media_type=media_type, filename=filename)


@router.head("/{job_id}/result", include_in_schema=False)  # a download manager's or proxy's size check
@router.get("/{job_id}/result", summary="The mp4 (HTTP range requests supported)", response_class=FileResponse)
def get_result(job_id: str, svc: Svc, who: Tenant, db: DB):
    job = tenant_job(db, who, job_id)
    return served_file(svc, job.result_key, job, "video/mp4", f"{job.name or job.id}.mp4")


@router.head("/{job_id}/thumbnail", include_in_schema=False)  # a download manager's or proxy's size check
@router.get("/{job_id}/thumbnail", summary="A jpg of the first frame", response_class=FileResponse)
def get_thumbnail(job_id: str, svc: Svc, who: Tenant, db: DB):
    job = tenant_job(db, who, job_id)
    return served_file(svc, job.thumbnail_key, job, "image/jpeg", f"{job.name or job.id}.jpg")


@router.post("/{job_id}/cancel", summary="Cancel a queued or running job")
def cancel_job(job_id: str, who: Tenant, db: DB):
    job = tenant_job(db, who, job_id)
    request_cancel(db, job)
    db.commit()  # before the answer: the next request must see it
    log.event("job_cancel_requested", job=job.id, tenant=who, status=job.status)
    return job_view(job)


@router.delete("/{job_id}", status_code=204, summary="Delete a job and its files")
def delete_job(job_id: str, svc: Svc, who: Tenant, db: DB):
    job = tenant_job(db, who, job_id)
    for key in (job.result_key, job.thumbnail_key, keys.job_inputs(job.tenant, job.id)):
        if key:
            svc.storage.delete(key)
    db.delete(job)
    db.commit()
    log.event("job_deleted", job=job_id, tenant=who)
    return PlainTextResponse(status_code=204)
