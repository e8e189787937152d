"""What endpoints depend on, through FastAPI's `Depends`: the app's settings, storage, queue and
tenants (kept on `app.state` by create_app), the caller's tenant, a database session, a request's
own temporary folder. An endpoint module needs nothing else to be imported or tested alone."""
from __future__ import annotations

import hmac
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator

from fastapi import Depends, Header, HTTPException, Request
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session

from .db import session_scope
from .queue import JobQueue
from .settings import Settings
from .storage import Storage
from .tenants import Tenants


@dataclass
class Service:
    """The app's long-lived parts, built once by create_app."""

    settings: Settings
    storage: Storage
    queue: JobQueue
    tenants: Tenants
    registries: dict[bool, CollectorRegistry]  # by_tenant -> registry

    def is_operator(self, authorization: str | None) -> bool:
        """The request carries the operators' key (LIPSYNC_OPS_KEY)."""
        scheme, _, key = (authorization or "").partition(" ")
        ops = self.settings.ops_key
        return bool(ops) and scheme.lower() == "bearer" and hmac.compare_digest(key.strip(), ops)


def service(request: Request) -> Service:
    return request.app.state.service


def tenant(svc: Annotated[Service, Depends(service)], authorization: Annotated[str | None, Header()] = None) -> str:
    scheme, _, key = (authorization or "").partition(" ")
    found = svc.tenants.tenant_for(key.strip() if scheme.lower() == "bearer" else None)
    if found is None:
        raise HTTPException(401, "missing or unknown API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    return found


def session(svc: Annotated[Service, Depends(service)]) -> Iterator[Session]:
    with session_scope(svc.settings.database) as s:
        yield s


def workdir(svc: Annotated[Service, Depends(service)]) -> Iterator[Path]:
    """A folder for this request's uploads, removed when the answer has been sent."""
    base = svc.settings.data_dir / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="request-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


Svc = Annotated[Service, Depends(service)]
Tenant = Annotated[str, Depends(tenant)]
DB = Annotated[Session, Depends(session)]
Work = Annotated[Path, Depends(workdir)]
