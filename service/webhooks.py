"""Completion webhooks: POST the job's view to an allow-listed host, signed with HMAC-SHA256
(`X-Lipsync-Signature: sha256=<hex>` over the body); failures raise so the queue retries them."""
from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlsplit

import httpx

from lipsync_triton import log
from .db import Job, session_scope
from .jobs import job_view
from .settings import get_settings


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(job_id: str) -> None:
    settings = get_settings()
    with session_scope(settings.database) as s:
        job = s.get(Job, job_id)
        if job is None or not job.webhook_url:
            return
        url, body = job.webhook_url, json.dumps({"event": "job.finished", "job": job_view(job)}).encode()
    if (urlsplit(url).hostname or "").lower() not in settings.allowed_webhook_hosts:
        log.event("webhook_refused", job=job_id, reason="host no longer allowed")
        return
    response = httpx.post(url, content=body, timeout=10.0, follow_redirects=False,
                          headers={"Content-Type": "application/json", "X-Lipsync-Signature": sign(settings.webhook_secret, body)})
    response.raise_for_status()
    log.event("webhook_delivered", job=job_id, status=response.status_code)
