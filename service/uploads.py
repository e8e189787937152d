"""A request's inputs: uploads saved into its folder, or files named by URL under the tenant's own
prefix of the service's storage; and the hand-over of admitted jobs to the queue."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from fastapi import Depends, Request, UploadFile

from lipsync_triton import log
from lipsync_triton.errors import Forbidden, InputError, NotFound
from . import storage_keys as keys
from .db import Job, JobStatus
from .deps import Service, Tenant


def only_fields(*names: str):
    """A dependency refusing form fields the endpoint does not know (a misspelt option such as
    `pad=1` would otherwise be dropped silently and the job run without it)."""
    known = frozenset(names)

    async def check(request: Request, _: Tenant) -> None:  # after the key check: strangers learn nothing
        if request.headers.get("content-type", "").startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            refuse_unknown_fields((await request.form()).keys(), known)  # parsed once: FastAPI reuses it

    return Depends(check)


def refuse_unknown_fields(names: Iterable[str], known: frozenset[str]) -> None:
    """A 422 naming the first field the endpoint does not know, and the ones it does."""
    unknown = sorted(set(names) - known)
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r}; known fields: {', '.join(sorted(known))}")


def save(upload: UploadFile, target: Path) -> Path:
    with open(target, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return target


def fetch_url(svc: Service, url: str, who: str, target: Path) -> Path:
    """An input given as a storage URL: only a plain file under the tenant's own prefix of the
    service's storage (no `..`, no symbolic link anywhere under the prefix)."""
    root = svc.settings.storage.rstrip("/")
    prefix = f"{root}/{keys.tenant_files(who)}"
    refused = Forbidden(f"inputs by URL must be files under your tenant's prefix {keys.tenant_files(who)} of the service's storage")
    if not url.startswith(prefix) or ".." in url[len(prefix):].split("/"):
        raise refused
    if svc.storage.local and not svc.storage.plain_file_under(url, prefix):
        raise refused
    try:
        svc.storage.fs.get_file(url, str(target))
    except FileNotFoundError:
        raise NotFound(f"{url[len(root) + 1:]} does not exist") from None
    return target


def enqueue(svc: Service, jobs: list[Job]) -> None:
    for job in jobs:
        if job.status == JobStatus.QUEUED:
            svc.queue.enqueue_job(job.id)
        log.event("job_submitted", job=job.id, tenant=job.tenant, status=job.status, batch=job.batch_id)
