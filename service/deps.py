"""What endpoints depend on, through FastAPI's `Depends`: the app's settings, storage, queue and
tenants (kept on `app.state` by create_app), the caller's tenant, a database session, a request's
own temporary folder. An endpoint module needs nothing else to be imported or tested alone."""
from __future__ import annotations

import hmac
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Annotated, AsyncIterator, Iterator

from fastapi import Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session

from .db import end_session, new_session
from .queue import JobQueue
from .settings import Settings
from .storage import Storage
from .auth_throttle import AuthThrottle
from .tenants import Tenants


@dataclass
class Service:
    """The app's long-lived parts, built once by create_app."""

    settings: Settings
    storage: Storage
    queue: JobQueue
    tenants: Tenants
    registries: dict[bool, CollectorRegistry]  # by_tenant -> registry
    throttle: AuthThrottle  # failed authentication per client address (API keys and the UI's sign-in)

    def is_operator(self, authorization: str | None) -> bool:
        """The request carries the operators' key (LIPSYNC_OPS_KEY)."""
        scheme, _, key = (authorization or "").partition(" ")
        ops = self.settings.ops_key
        return bool(ops) and scheme.lower() == "bearer" and hmac.compare_digest(key.strip(), ops)


# `service`, `tenant` and `workdir` are `async def` although nothing in them awaits: FastAPI runs a
# plain `def` dependency in its thread pool, and each such hop costs a request a thread handoff and
# the GIL (measured: a fifth of a poll's CPU; under a burst of submits the hops queue behind each other).


async def service(request: Request) -> Service:
    return request.app.state.service


async def tenant(request: Request, svc: Annotated[Service, Depends(service)],
                 authorization: Annotated[str | None, Header()] = None) -> str:
    return tenant_of(svc, authorization, request.client.host if request.client else "")


def tenant_of(svc: Service, authorization: str | None, client: str) -> str:
    """The tenant whose key an Authorization header carries, or 401 (also for WebSockets); 429 while
    `client` (its address) has failed too often (auth_throttle.py)."""
    svc.throttle.check(client)
    scheme, _, key = (authorization or "").partition(" ")
    found = svc.tenants.tenant_for(key.strip() if scheme.lower() == "bearer" else None)
    if found is None:
        svc.throttle.failed(client)
        raise HTTPException(401, "missing or unknown API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    return found


async def session(svc: Annotated[Service, Depends(service)]) -> AsyncIterator[Session]:
    """One transaction per request (as db.session_scope): opened here, as it does no I/O, and ended
    in the thread pool, as commit and rollback talk to the database."""
    s = new_session(svc.settings.database)
    try:
        yield s
    except BaseException:
        await run_in_threadpool(end_session, s, False)
        raise
    await run_in_threadpool(end_session, s, True)


async def workdir(svc: Annotated[Service, Depends(service)]) -> AsyncIterator[Path]:
    """A folder for this request's uploads, removed when the answer has been sent."""
    path = _new_request_folder(svc.settings)
    try:
        yield path
    finally:
        if not _removed_if_empty(path):
            await run_in_threadpool(shutil.rmtree, path, True)


@contextmanager
def request_folder(settings: Settings) -> Iterator[Path]:
    """`workdir` for code already in the thread pool."""
    path = _new_request_folder(settings)
    try:
        yield path
    finally:
        if not _removed_if_empty(path):
            shutil.rmtree(path, ignore_errors=True)


def _removed_if_empty(path: Path) -> bool:
    try:
        path.rmdir()  # usually empty: uploads were moved into storage
        return True
    except OSError:
        return False


def _new_request_folder(settings: Settings) -> Path:
    base = settings.data_dir / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="request-", dir=base))


Svc = Annotated[Service, Depends(service)]
Tenant = Annotated[str, Depends(tenant)]
DB = Annotated[Session, Depends(session)]
Work = Annotated[Path, Depends(workdir)]
