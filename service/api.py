"""The REST API (FastAPI; OpenAPI at /docs): one router per resource (routes_jobs, routes_batches,
routes_health), what they depend on in deps.py, and the web UI at /ui.

Endpoints are plain `def`s (FastAPI runs them in its thread pool: database and storage calls
block), except the submit, the hot path under a burst: it parses its form on the event loop and
makes one hop to the pool for all its blocking work. Every lookup is scoped to the caller's
tenant; another tenant's id answers 404."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi_offline import FastAPIOffline
from starlette.datastructures import MutableHeaders

from lipsync_triton import log
from lipsync_triton.errors import LipsyncError, http_status
from . import routes_batches, routes_health, routes_jobs, routes_live, routes_presenters
from .live_sessions import LiveHub
from .auth_throttle import AuthThrottle
from .body_limit import BodyLimit
from .deps import Service
from .metrics import registry_for
from .queue import JobQueue
from .settings import Settings, get_settings
from .storage import Storage
from .tenants import Tenants
from .user_errors import tenant_message

FAVICON = Path(__file__).with_name("static") / "favicon.png"

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "SAMEORIGIN",
                    "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin"}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every answer. Plain ASGI rather than `@app.middleware("http")`
    (Starlette's BaseHTTPMiddleware runs each request through an extra task and memory streams:
    a measurable share of a submit under a burst)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LipsyncError)
    def lipsync_error(_request: Request, exc: LipsyncError):
        """Every refusal by its cause (errors.HTTP_STATUS); a dependency down is a 503 worth retrying."""
        status = http_status(exc)
        headers = {"Retry-After": "30"} if status == 503 else None
        return JSONResponse({"detail": tenant_message(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RecursionError)
    def too_deep(_request: Request, _exc: RecursionError):
        return JSONResponse({"detail": "the request nests data too deeply; send flat JSON options"}, status_code=422)

    @app.exception_handler(Exception)
    def internal_error(_request: Request, exc: Exception):
        # Answered by Starlette's outermost middleware, past the headers middleware: set them here.
        log.event("internal_error", error=type(exc).__name__, detail=str(exc).splitlines()[0][:300] if str(exc) else "")
        return JSONResponse({"detail": "internal error; the operator's log has the details"}, status_code=500,
                            headers=SECURITY_HEADERS)


def create_app(settings: Settings | None = None, api_base: str | None = None, queue: JobQueue | None = None) -> FastAPI:
    """The app; `api_base` (how the server reaches itself, e.g. http://127.0.0.1:7860) mounts the web UI."""
    settings = settings or get_settings()
    queue = queue or JobQueue(settings)
    tenants = Tenants(settings)
    # /docs and /redoc with Swagger UI and ReDoc served from the package (fastapi-offline), not a CDN:
    # on a private network the CDN is unreachable and the pages would be blank.
    app = FastAPIOffline(title="lipsync-triton job service", version="1",
                         description="Lip-sync presenter videos through NVIDIA Triton: jobs, batches, results.")

    @app.get("/", include_in_schema=False)
    def home():
        return RedirectResponse("/ui/" if api_base else "/docs")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return FileResponse(FAVICON, media_type="image/png")
    throttle = AuthThrottle(settings.auth_failures_per_minute)
    app.state.service = Service(settings, Storage(settings.storage, settings.s3_endpoint_url), queue, tenants,
                                {by_tenant: registry_for(settings, queue, by_tenant) for by_tenant in (False, True)}, throttle)
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 2**20))

    app.add_middleware(SecurityHeaders)

    _add_error_handlers(app)
    app.state.live = LiveHub(settings)
    app.router.add_event_handler("shutdown", app.state.live.close_all)
    for router in (routes_jobs.router, routes_batches.router, routes_presenters.router, routes_live.router, routes_health.router):
        app.include_router(router)
    if api_base:
        from .ui import mount_ui

        app = mount_ui(app, api_base, tenants, int(settings.max_upload_mb * 2**20), throttle, favicon=FAVICON)
    return app
