"""/v1/jobs: submit one job, list, look at, download, cancel and delete the tenant's jobs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy import func, select
from starlette.datastructures import UploadFile

from lipsync_triton import log
from lipsync_triton.client.options import job_options
from . import storage_keys as keys
from .db import Job, JobStatus, session_scope
from .deps import DB, Service, Svc, Tenant, request_folder
from .job_options import OPTION_NAMES, JobOptions
from lipsync_triton.tracing import valid_traceparent
from lipsync_triton.errors import Conflict, Gone, InputError
from .jobs import (admit, check_idempotency_key, display_name, job_for_key, job_view, new_job,
                   request_cancel, tenant_job)
from .object_response import stream_object
from .presenters import tenant_presenter, usable
from .uploads import enqueue, fetch_url, refuse_unknown_fields, save
from .webhooks import check_webhook

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


FILE_FIELDS = {"face": "presenter video or photo", "audio": "speech (any audio or video file)"}
TEXT_FIELDS = {"face_url": "a file under your tenant's prefix of the service's storage, instead of face",
               "audio_url": "a file under your tenant's prefix of the service's storage, instead of audio",
               "presenter_id": "a registered presenter (POST /v1/presenters) instead of face",
               "webhook_url": "called when the job ends (signed: see the README)"}
KNOWN_FIELDS = frozenset((*FILE_FIELDS, *TEXT_FIELDS, *OPTION_NAMES))


@dataclass(frozen=True)
class Submission:
    """A submit's form, read once: its uploads, the text fields and the parsed job options."""

    files: dict[str, UploadFile]
    text: dict[str, str]
    options: JobOptions


async def submission(request: Request, _: Tenant) -> Submission:
    """The form of POST /v1/jobs, parsed and checked in one pass (after the key check: strangers
    learn nothing). Unknown fields are refused rather than dropped: a misspelt option such as
    `pad=1` would otherwise run the job without it. One dependency instead of a FastAPI parameter
    per field: FastAPI inspects every declared form field's annotation on every request, which made
    up a fifth of a submit's CPU (perf/BENCHMARKS.md, submit latency)."""
    form = await request.form()
    refuse_unknown_fields(form.keys(), KNOWN_FIELDS)
    files: dict[str, UploadFile] = {}
    text: dict[str, str] = {}
    for name, value in form.multi_items():
        if (name in files or name in text) and value not in (None, ""):
            raise InputError(f"field {name!r} given twice; send it once")
        if name in FILE_FIELDS:
            if not isinstance(value, UploadFile):
                raise InputError(f"field {name!r} must be a file upload")
            files[name] = value
        elif isinstance(value, UploadFile):
            raise InputError(f"field {name!r} must be text, not a file")
        elif value != "":
            text[name] = value
    options = JobOptions.parse({k: v for k, v in text.items() if k in OPTION_NAMES})
    return Submission(files, {k: v for k, v in text.items() if k in TEXT_FIELDS}, options)


def _form_schema() -> dict:
    """The OpenAPI description of the submit form (what /docs shows and schemathesis sends), from
    the same declarations `submission` reads."""
    properties = {name: {"type": "string", "contentMediaType": "application/octet-stream", "description": help}
                  for name, help in FILE_FIELDS.items()}
    properties |= {name: {"type": "string", "description": help} for name, help in TEXT_FIELDS.items()}
    properties |= {d.name: {"type": "string", "description": d.spec.help} for d in job_options()}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": {
        "title": "SubmitJobForm", "type": "object", "properties": properties, "additionalProperties": False}}}}}


@router.post("", status_code=202, summary="Submit one job: presenter video/photo + speech", openapi_extra=_form_schema())
async def submit_job(svc: Svc, who: Tenant, form: Annotated[Submission, Depends(submission)],
                     idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", description=(
                         "a key of yours (a UUID) naming this submission: a retry with the same key returns the first job "
                         "instead of making a second"))] = None,
                     traceparent: Annotated[str | None, Header(description="W3C trace context: Triton's spans join this trace")] = None):
    key = check_idempotency_key(idempotency_key)
    # Storage, the database and the queue block: one hop to the thread pool for all of them.
    return await run_in_threadpool(_submit, svc, who, form, key, valid_traceparent(traceparent))


def _submit(svc: Service, who: str, form: Submission, key: str | None, traceparent: str | None) -> JSONResponse:
    hook = check_webhook(form.text.get("webhook_url"), svc.settings)
    face, audio = form.files.get("face"), form.files.get("audio")
    face_url, audio_url, presenter_id = (form.text.get(k) for k in ("face_url", "audio_url", "presenter_id"))
    with session_scope(svc.settings.database) as db, request_folder(svc.settings) as work:
        if (earlier := job_for_key(db, who, key)) is not None:
            return _accepted(earlier, replayed=True)
        if presenter_id and (face or face_url):
            raise InputError("send a face (file or face_url) or a presenter_id, not both")
        presenter = usable(tenant_presenter(db, who, presenter_id)) if presenter_id else None
        face_path = save(face, work / "face") if face else fetch_url(svc, face_url, who, work / "face") if face_url else None
        audio_path = save(audio, work / "audio") if audio else fetch_url(svc, audio_url, who, work / "audio") if audio_url else None
        if (face_path is None and presenter is None) or audio_path is None:
            raise InputError("send both a face (file, face_url or presenter_id) and an audio (file or audio_url)")
        name = presenter.name if presenter else display_name(face.filename if face else face_url, "presenter")
        job = new_job(db, svc.storage, svc.settings, who, presenter or face_path, audio_path, form.options, name,
                      webhook_url=hook, traceparent=traceparent, idempotency_key=key, move_inputs=True)
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


def served_file(svc: Svc, request: Request, key: str | None, job: Job, media_type: str, filename: str) -> Response:
    """A result from storage: a local file as it is, object storage streamed (a range too) with no
    copy on the API's disk, so nothing outlives the retention policy there."""
    if job.status == JobStatus.EXPIRED:
        raise Gone("the job's files were deleted by the retention policy")
    if job.status != JobStatus.SUCCEEDED or not key:
        raise Conflict(f"job {job.id} has no result yet (status {job.status})")
    path = svc.storage.local_path(key)
    if path is not None:
        if not path.exists():
            raise Gone(f"job {job.id}'s file is missing from storage")
        return FileResponse(path, media_type=media_type, filename=filename)
    try:
        size = svc.storage.size(key)
    except FileNotFoundError:
        raise Gone(f"job {job.id}'s file is missing from storage") from None
    return stream_object(svc.storage, key, size, request.headers.get("range"), media_type, filename,
                         head=request.method == "HEAD")


@router.head("/{job_id}/result", include_in_schema=False)  # a download manager's or proxy's size check
@router.get("/{job_id}/result", summary="The mp4 (HTTP range requests supported)", response_class=FileResponse)
def get_result(job_id: str, request: Request, svc: Svc, who: Tenant, db: DB):
    job = tenant_job(db, who, job_id)
    return served_file(svc, request, job.result_key, job, "video/mp4", f"{job.name or job.id}.mp4")


@router.head("/{job_id}/thumbnail", include_in_schema=False)  # a download manager's or proxy's size check
@router.get("/{job_id}/thumbnail", summary="A jpg of the first frame", response_class=FileResponse)
def get_thumbnail(job_id: str, request: Request, svc: Svc, who: Tenant, db: DB):
    job = tenant_job(db, who, job_id)
    return served_file(svc, request, job.thumbnail_key, job, "image/jpeg", f"{job.name or job.id}.jpg")


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
