"""/v1/presenters: register a presenter once (its faces are tracked then), list, look at, delete.
Jobs and batches name it as `presenter_id` instead of uploading the video again."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import select

from lipsync_triton import log
from .db import Presenter
from .deps import DB, Svc, Tenant, Work
from .jobs import display_name
from .presenters import delete, presenter_view, register, tenant_presenter
from .uploads import only_fields, save

router = APIRouter(prefix="/v1/presenters", tags=["presenters"])


@router.post("", status_code=202, summary="Register a presenter video or photo; its faces are tracked once, now",
             dependencies=[only_fields("face", "name")])
def create_presenter(svc: Svc, who: Tenant, db: DB, work: Work,
                     face: Annotated[UploadFile, File(description="presenter video or photo")],
                     name: Annotated[str | None, Form(max_length=200, description="display name (default: the file's)")] = None):
    presenter = register(db, svc.storage, svc.settings, who, save(face, work / "face"),
                         display_name(name or face.filename, "presenter"))
    svc.queue.prepare_presenter(presenter.id)
    log.event("presenter_registered", presenter=presenter.id, tenant=who)
    return JSONResponse(presenter_view(presenter), status_code=202, headers={"Location": f"/v1/presenters/{presenter.id}"})


@router.get("", summary="The tenant's presenters, newest first")
def list_presenters(who: Tenant, db: DB, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0):
    found = db.scalars(select(Presenter).where(Presenter.tenant == who).order_by(Presenter.created_at.desc(), Presenter.id)
                       .limit(limit).offset(offset))
    return {"presenters": [presenter_view(p) for p in found], "limit": limit, "offset": offset}


@router.get("/{presenter_id}", summary="A presenter: preparing, ready (faces tracked) or failed (one-line error)")
def get_presenter(presenter_id: str, who: Tenant, db: DB):
    return presenter_view(tenant_presenter(db, who, presenter_id))


@router.delete("/{presenter_id}", status_code=204, summary="Delete a presenter and its file (not while its jobs run)")
def delete_presenter(presenter_id: str, svc: Svc, who: Tenant, db: DB):
    delete(db, svc.storage, tenant_presenter(db, who, presenter_id))
    log.event("presenter_deleted", presenter=presenter_id, tenant=who)
    return PlainTextResponse(status_code=204)
