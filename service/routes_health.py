"""What operators and load balancers ask: /healthz, /readyz, /metrics (details and per-tenant series
only with the operators' key), and a tenant's webhook secret."""
from __future__ import annotations
from lipsync_triton.errors import NotFound

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .deps import Svc, Tenant
from .readiness import check_all
from .webhooks import tenant_secret

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="Triton models ready, storage, queue and database reachable "
            "(each check's detail with the operators' key)")
def readyz(svc: Svc, authorization: Annotated[str | None, Header()] = None):
    checks, weights = check_all(svc.settings, svc.queue)
    ready = all(ok for ok, _ in checks.values())
    detailed = svc.is_operator(authorization)
    # Everyone may know whether the weights are random (a blurred mouth is then expected); the
    # checkpoint's hash only the operators.
    shown = weights if detailed or weights in ("random", "unknown") else "checkpoint"
    return JSONResponse({"ready": ready, "weights": shown,
                         "checks": {k: {"ok": ok, **({"detail": d} if detailed else {})} for k, (ok, d) in checks.items()}},
                        status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics (per tenant with the operators' key)", response_class=PlainTextResponse)
def metrics(svc: Svc, authorization: Annotated[str | None, Header()] = None):
    return PlainTextResponse(generate_latest(svc.registries[svc.is_operator(authorization)]), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/webhook-secret", summary="Your tenant's secret for verifying webhook signatures", tags=["webhooks"])
def webhook_secret(svc: Svc, who: Tenant):
    if not svc.settings.webhook_secret:
        raise NotFound("webhooks are off on this service (the operator sets LIPSYNC_WEBHOOK_SECRET)")
    return {"secret": tenant_secret(svc.settings.webhook_secret, who), "header": "X-Lipsync-Signature",
            "scheme": "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, '<t>.' + body)>"}
