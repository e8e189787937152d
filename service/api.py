"""The REST API (FastAPI; OpenAPI at /docs): jobs, batches, results, health, metrics; the web UI at /ui.

Every endpoint is a plain `def` (FastAPI runs it in its thread pool: database, storage and ffprobe
calls block). Every lookup is scoped to the caller's tenant; another tenant's id answers 404."""

import hmac
import inspect
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Iterator

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from lipsync_triton import log
from lipsync_triton.client.options import job_options
from lipsync_triton.errors import LipsyncError
from . import storage_keys as keys
from .body_limit import BodyLimit
from .db import FINAL, Job, JobStatus, session_scope
from .job_options import JobOptions
from .jobs import (InputError, admit, batch_jobs, check_capacity, display_name, failed_job, safe_name, job_view, new_batch, new_job,
                   request_cancel, tenant_batch, tenant_job)
from .metrics import registry_for
from .queue import JobQueue
from .readiness import check_all
from .settings import Settings, get_settings
from .storage import Storage
from .tenants import Tenants
from .webhooks import check_webhook, tenant_secret
from .zip_manifest import read_zip_batch

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "SAMEORIGIN",
                    "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin"}


def with_option_fields(endpoint):
    """One optional form field per job option (client/options.py), added to the endpoint's signature:
    FastAPI reads the fields (and documents them) from it, and passes them as keyword arguments."""
    signature = inspect.signature(endpoint)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(d.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[str | None, Form(description=d.spec.help)]) for d in job_options()]
    endpoint.__signature__ = signature.replace(parameters=params)
    return endpoint


def create_app(settings: Settings | None = None, api_base: str | None = None, queue: JobQueue | None = None) -> FastAPI:
    """The app; `api_base` (how the server reaches itself, e.g. http://127.0.0.1:7860) mounts the web UI."""
    settings = settings or get_settings()
    queue = queue or JobQueue(settings)
    tenants = Tenants(settings)
    storage = Storage(settings.storage, settings.s3_endpoint_url)
    registries = {by_tenant: registry_for(settings, queue, by_tenant) for by_tenant in (False, True)}
    app = FastAPI(title="lipsync-triton job service", version="1",
                  description="Lip-sync presenter videos through NVIDIA Triton: jobs, batches, results.")
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 2**20))

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(InputError)
    def input_error(_request: Request, exc: InputError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(LipsyncError)
    def lipsync_error(_request: Request, exc: LipsyncError):
        return JSONResponse({"detail": str(exc).splitlines()[0]}, status_code=422)

    @app.exception_handler(RecursionError)
    def too_deep(_request: Request, _exc: RecursionError):
        return JSONResponse({"detail": "the request nests data too deeply; send flat JSON options"}, status_code=422)

    @app.exception_handler(Exception)
    def internal_error(_request: Request, exc: Exception):
        # Answered by Starlette's outermost middleware, past the headers middleware: set them here.
        log.event("internal_error", error=type(exc).__name__, detail=str(exc).splitlines()[0][:300] if str(exc) else "")
        return JSONResponse({"detail": "internal error; the operator's log has the details"}, status_code=500,
                            headers=SECURITY_HEADERS)

    def is_operator(authorization: str | None) -> bool:
        scheme, _, key = (authorization or "").partition(" ")
        return bool(settings.ops_key) and scheme.lower() == "bearer" and hmac.compare_digest(key.strip(), settings.ops_key)

    def tenant(authorization: Annotated[str | None, Header()] = None) -> str:
        scheme, _, key = (authorization or "").partition(" ")
        found = tenants.tenant_for(key.strip() if scheme.lower() == "bearer" else None)
        if found is None:
            raise HTTPException(401, "missing or unknown API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        return found

    def session() -> Iterator[Session]:
        with session_scope(settings.database) as s:
            yield s

    def workdir() -> Iterator[Path]:
        base = settings.data_dir / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="request-", dir=base))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    Tenant = Annotated[str, Depends(tenant)]
    DB = Annotated[Session, Depends(session)]
    Work = Annotated[Path, Depends(workdir)]

    def save(upload: UploadFile, target: Path) -> Path:
        with open(target, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
        return target

    def fetch_url(url: str, who: str, target: Path) -> Path:
        """An input given as a storage URL: only a plain file under the tenant's own prefix of the
        service's storage (no `..`, no symbolic link anywhere under the prefix)."""
        prefix = f"{settings.storage.rstrip('/')}/{keys.tenant_files(who)}"
        refused = InputError(f"inputs by URL must be files under your tenant's prefix {keys.tenant_files(who)} of the service's storage",
                             403)
        if not url.startswith(prefix) or ".." in url[len(prefix):].split("/"):
            raise refused
        if storage.local and not storage.plain_file_under(url, prefix):
            raise refused
        try:
            storage.fs.get_file(url, str(target))
        except FileNotFoundError:
            raise InputError(f"{url[len(settings.storage.rstrip('/')) + 1:]} does not exist", 404) from None
        return target

    def enqueue(jobs: list[Job]) -> None:
        for job in jobs:
            if job.status == JobStatus.QUEUED:
                queue.enqueue_job(job.id)
            log.event("job_submitted", job=job.id, tenant=job.tenant, status=job.status, batch=job.batch_id)

    @app.post("/v1/jobs", status_code=202, summary="Submit one job: presenter video/photo + speech")
    @with_option_fields
    def submit_job(who: Tenant, db: DB, work: Work,
                   face: Annotated[UploadFile | None, File(description="presenter video or photo")] = None,
                   audio: Annotated[UploadFile | None, File(description="speech (any audio or video file)")] = None,
                   face_url: Annotated[str | None, Form()] = None, audio_url: Annotated[str | None, Form()] = None,
                   webhook_url: Annotated[str | None, Form()] = None, **option_fields: str | None):
        options = JobOptions.parse(option_fields)
        hook = check_webhook(webhook_url, settings)
        face_path = save(face, work / "face") if face else fetch_url(face_url, who, work / "face") if face_url else None
        audio_path = save(audio, work / "audio") if audio else fetch_url(audio_url, who, work / "audio") if audio_url else None
        if face_path is None or audio_path is None:
            raise InputError("send both a face (file or face_url) and an audio (file or audio_url)")
        check_capacity(db, who, settings)
        job = new_job(db, storage, settings, who, face_path, audio_path, options,
                      display_name(face.filename if face else face_url, "presenter"),
                      webhook_url=hook)
        admit(db, storage, settings, who, [job])
        enqueue([job])
        return JSONResponse({"id": job.id, "status": job.status}, status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs", summary="The tenant's jobs, newest first")
    def list_jobs(who: Tenant, db: DB, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                  offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
                  status: Annotated[str | None, Query(max_length=16)] = None):
        query = select(Job).where(Job.tenant == who)
        if status:
            query = query.where(Job.status == status)
        total = db.query(Job).filter(Job.tenant == who, *([Job.status == status] if status else [])).count()
        jobs = db.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset))
        return {"jobs": [job_view(j) for j in jobs], "total": total, "limit": limit, "offset": offset}

    @app.get("/v1/jobs/{job_id}", summary="A job's state, progress, error and links")
    def get_job(job_id: str, who: Tenant, db: DB):
        return job_view(tenant_job(db, who, job_id))

    def served_file(key: str | None, job: Job, media_type: str, filename: str) -> FileResponse:
        if job.status == JobStatus.EXPIRED:
            raise InputError("the job's files were deleted by the retention policy", 410)
        if job.status != JobStatus.SUCCEEDED or not key:
            raise InputError(f"job {job.id} has no result yet (status {job.status})", 409)
        path = storage.local_path(key)
        if path is None:  # object storage: a local copy, fetched once, served with range support
            path = settings.data_dir / "cache" / key
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".partial")
                storage.get_file(key, tmp)
                tmp.replace(path)
        if not path.exists():
            raise InputError(f"job {job.id}'s file is missing from storage", 410)
        return FileResponse(path, media_type=media_type, filename=filename)

    @app.get("/v1/jobs/{job_id}/result", summary="The mp4 (HTTP range requests supported)",
             response_class=FileResponse)
    def get_result(job_id: str, who: Tenant, db: DB):
        job = tenant_job(db, who, job_id)
        return served_file(job.result_key, job, "video/mp4", f"{job.name or job.id}.mp4")

    @app.get("/v1/jobs/{job_id}/thumbnail", summary="A jpg of the first frame", response_class=FileResponse)
    def get_thumbnail(job_id: str, who: Tenant, db: DB):
        job = tenant_job(db, who, job_id)
        return served_file(job.thumbnail_key, job, "image/jpeg", f"{job.name or job.id}.jpg")

    @app.post("/v1/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
    def cancel_job(job_id: str, who: Tenant, db: DB):
        job = tenant_job(db, who, job_id)
        request_cancel(db, job)
        db.commit()  # before the answer: the next request must see it
        log.event("job_cancel_requested", job=job.id, tenant=who, status=job.status)
        return job_view(job)

    @app.delete("/v1/jobs/{job_id}", status_code=204, summary="Delete a job and its files")
    def delete_job(job_id: str, who: Tenant, db: DB):
        job = tenant_job(db, who, job_id)
        for key in (job.result_key, job.thumbnail_key, keys.job_inputs(job.tenant, job.id)):
            if key:
                storage.delete(key)
        db.delete(job)
        db.commit()
        log.event("job_deleted", job=job_id, tenant=who)
        return PlainTextResponse(status_code=204)

    @app.post("/v1/batches", status_code=202, summary="Many jobs at once: one audio + many faces, "
              "face/audio pairs, or a ZIP with manifest.csv")
    def submit_batch(who: Tenant, db: DB, work: Work,
                     faces: Annotated[list[UploadFile], File()] = [],  # noqa: B006 (FastAPI reads the default)
                     audios: Annotated[list[UploadFile], File()] = [],  # noqa: B006
                     audio: Annotated[UploadFile | None, File()] = None,
                     archive: Annotated[UploadFile | None, File(description="ZIP with manifest.csv")] = None,
                     options: Annotated[str | None, Form(description="JSON object of generate options for every item")] = None):
        import json

        try:
            shared = json.loads(options) if options else {}
            if not isinstance(shared, dict):
                raise ValueError
        except ValueError:
            raise InputError("options must be a JSON object such as {\"pads\": [0, 20, 0, 0]}") from None
        JobOptions.parse(shared)  # fail the whole request early on a bad shared option
        items: list[tuple[Path | None, Path | None, str, dict, str | None]] = []
        if archive is not None:
            for item in read_zip_batch(save(archive, work / "batch.zip"), work, int(settings.max_upload_mb * 2**20)):
                items.append((item.face, item.audio, item.name, shared | item.options, item.error))
        elif faces and audio is not None:
            speech = save(audio, work / "audio")
            for i, upload in enumerate(faces):
                items.append((save(upload, work / f"{i}_face"), speech, display_name(upload.filename, f"item{i}"), shared, None))
        elif faces and len(audios) == len(faces):
            for i, (f, a) in enumerate(zip(faces, audios)):
                items.append((save(f, work / f"{i}_face"), save(a, work / f"{i}_audio"), display_name(f.filename, f"item{i}"),
                              shared, None))
        else:
            raise InputError("send one audio with several faces, as many audios as faces, or an archive (ZIP with manifest.csv)")
        check_capacity(db, who, settings, adding=len(items))
        batch = new_batch(db, who)
        jobs = []
        for number, (face_path, audio_path, name, item_options, error) in enumerate(items):
            try:
                opts = JobOptions.parse(item_options)
            except LipsyncError as exc:
                opts, error = JobOptions(), error or str(exc)
            if error:
                job = failed_job(db, who, opts, name, error, batch_id=batch.id, item=number)
            else:
                job = new_job(db, storage, settings, who, face_path, audio_path, opts, name, batch_id=batch.id, item=number,
                              fail_softly=True)
            jobs.append(job)
        admit(db, storage, settings, who, jobs, batch)
        enqueue(jobs)
        return JSONResponse({"id": batch.id, "jobs": [{"id": j.id, "status": j.status, "error": j.error} for j in jobs]},
                            status_code=202, headers={"Location": f"/v1/batches/{batch.id}"})

    @app.get("/v1/batches/{batch_id}", summary="A batch with each item's job state")
    def get_batch(batch_id: str, who: Tenant, db: DB):
        batch = tenant_batch(db, who, batch_id)
        jobs = batch_jobs(db, batch.id)
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        done = all(j.status in FINAL for j in jobs)
        return {"id": batch.id, "created_at": batch.created_at.isoformat() + "Z", "done": done, "counts": counts,
                "jobs": [job_view(j) for j in jobs], "links": {"archive": f"/v1/batches/{batch.id}/archive"}}

    @app.get("/v1/batches/{batch_id}/archive", summary="ZIP of the batch's finished results", response_class=FileResponse)
    def get_batch_archive(batch_id: str, who: Tenant, db: DB):
        batch = tenant_batch(db, who, batch_id)
        finished = [j for j in batch_jobs(db, batch.id) if j.status == JobStatus.SUCCEEDED and j.result_key]
        if not finished:
            raise InputError(f"batch {batch.id} has no finished result yet", 409)
        base = settings.data_dir / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(prefix="archive-", suffix=".zip", dir=base, delete=False)
        with handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
            for job in finished:
                with storage.open(job.result_key) as src, archive.open(f"{job.item:04d}_{safe_name(job.name, 'item')}.mp4", "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        return FileResponse(handle.name, media_type="application/zip", filename=f"batch-{batch.id}.zip",
                            background=BackgroundTask(Path(handle.name).unlink, missing_ok=True))

    @app.get("/v1/webhook-secret", summary="Your tenant's secret for verifying webhook signatures")
    def webhook_secret(who: Tenant):
        if not settings.webhook_secret:
            raise InputError("webhooks are off on this service (the operator sets LIPSYNC_WEBHOOK_SECRET)", 404)
        return {"secret": tenant_secret(settings.webhook_secret, who), "header": "X-Lipsync-Signature",
                "scheme": "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, '<t>.' + body)>"}

    @app.get("/healthz", summary="The process is up")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Triton models ready, storage, queue and database reachable "
             "(each check's detail with the operators' key)")
    def readyz(authorization: Annotated[str | None, Header()] = None):
        checks = check_all(settings, queue)
        ready = all(ok for ok, _ in checks.values())
        detailed = is_operator(authorization)
        return JSONResponse({"ready": ready, "checks": {k: {"ok": ok, **({"detail": d} if detailed else {})}
                                                        for k, (ok, d) in checks.items()}},
                            status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics (per tenant with the operators' key)", response_class=PlainTextResponse)
    def metrics(authorization: Annotated[str | None, Header()] = None):
        return PlainTextResponse(generate_latest(registries[is_operator(authorization)]), media_type=CONTENT_TYPE_LATEST)

    if api_base:
        from .ui import mount_ui

        app = mount_ui(app, api_base, tenants, int(settings.max_upload_mb * 2**20))
    return app
