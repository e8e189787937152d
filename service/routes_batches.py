"""/v1/batches: many jobs at once (one speech for many presenters, pairs, or a ZIP with a manifest),
their states, and a ZIP of their results."""
from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask

from lipsync_triton.errors import Conflict, InputError, LipsyncError
from .db import FINAL, JobStatus, Presenter
from .deps import DB, Svc, Tenant, Work
from .job_options import JobOptions
from .jobs import (admit, batch_jobs, check_capacity, display_name, failed_job, job_view, new_batch, new_job,
                   result_names, tenant_batch)
from .presenters import tenant_presenter, usable
from .uploads import enqueue, only_fields, save
from .zip_manifest import read_zip_batch

router = APIRouter(prefix="/v1/batches", tags=["batches"])


def _shared_options(options: str | None) -> dict:
    try:
        shared = json.loads(options) if options else {}
        if not isinstance(shared, dict):
            raise ValueError
    except ValueError:
        raise InputError("options must be a JSON object such as {\"pads\": [0, 20, 0, 0]}") from None
    JobOptions.parse(shared)  # fail the whole request early on a bad shared option
    return shared


@router.post("", status_code=202, summary="Many jobs at once: one audio + many faces, face/audio pairs, or a ZIP with manifest.csv",
             dependencies=[only_fields("faces", "audios", "audio", "archive", "options", "presenter_ids")])
def submit_batch(svc: Svc, who: Tenant, db: DB, work: Work,
                 faces: Annotated[list[UploadFile], File()] = [],  # noqa: B006 (FastAPI reads the default)
                 audios: Annotated[list[UploadFile], File()] = [],  # noqa: B006
                 audio: Annotated[UploadFile | None, File()] = None,
                 archive: Annotated[UploadFile | None, File(description="ZIP with manifest.csv")] = None,
                 options: Annotated[str | None, Form(description="JSON object of generate options for every item")] = None,
                 presenter_ids: Annotated[str | None, Form(description="registered presenters, comma-separated, instead of faces")] = None):
    shared = _shared_options(options)
    items: list[tuple[Path | Presenter | None, Path | None, str, dict, str | None]] = []
    presenters = [usable(tenant_presenter(db, who, p.strip())) for p in (presenter_ids or "").split(",") if p.strip()]
    if presenters and (faces or archive is not None):
        raise InputError("send faces, an archive or presenter_ids, not several")
    if presenters and (audio is not None or len(audios) == len(presenters)):
        speeches = [save(audio, work / "audio")] * len(presenters) if audio is not None else \
            [save(a, work / f"{i}_audio") for i, a in enumerate(audios)]
        for presenter, speech in zip(presenters, speeches):
            items.append((presenter, speech, presenter.name, shared, None))
    elif archive is not None:
        for item in read_zip_batch(save(archive, work / "batch.zip"), work, int(svc.settings.max_upload_mb * 2**20),
                                   int(svc.settings.max_archive_expanded_mb * 2**20),
                                   before_extracting=lambda count: check_capacity(db, who, svc.settings, adding=count)):
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
        raise InputError("send one audio with several faces (or presenter_ids), as many audios as faces (or presenter_ids), "
                         "or an archive (ZIP with manifest.csv)")
    check_capacity(db, who, svc.settings, adding=len(items))
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
            job = new_job(db, svc.storage, svc.settings, who, face_path, audio_path, opts, name, batch_id=batch.id,
                          item=number, fail_softly=True)
        jobs.append(job)
    admit(db, svc.storage, svc.settings, who, jobs, batch)
    enqueue(svc, jobs)
    return JSONResponse({"id": batch.id, "jobs": [{"id": j.id, "status": j.status, "error": j.error} for j in jobs]},
                        status_code=202, headers={"Location": f"/v1/batches/{batch.id}"})


@router.get("/{batch_id}", summary="A batch with each item's job state")
def get_batch(batch_id: str, who: Tenant, db: DB):
    batch = tenant_batch(db, who, batch_id)
    jobs = batch_jobs(db, batch.id)
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    return {"id": batch.id, "created_at": batch.created_at.isoformat() + "Z", "done": all(j.status in FINAL for j in jobs),
            "counts": counts, "jobs": [job_view(j) for j in jobs], "links": {"archive": f"/v1/batches/{batch.id}/archive"}}


@router.get("/{batch_id}/archive", summary="ZIP of the batch's finished results", response_class=FileResponse)
def get_batch_archive(batch_id: str, svc: Svc, who: Tenant, db: DB):
    batch = tenant_batch(db, who, batch_id)
    finished = [j for j in batch_jobs(db, batch.id) if j.status == JobStatus.SUCCEEDED and j.result_key]
    if not finished:
        raise Conflict(f"batch {batch.id} has no finished result yet")
    base = svc.settings.data_dir / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(prefix="archive-", suffix=".zip", dir=base, delete=False)
    with handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for job, member in zip(finished, result_names([(job.item or 0, job.name) for job in finished])):
            with svc.storage.open(job.result_key) as src, archive.open(member, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return FileResponse(handle.name, media_type="application/zip", filename=f"batch-{batch.id}.zip",
                        background=BackgroundTask(Path(handle.name).unlink, missing_ok=True))
