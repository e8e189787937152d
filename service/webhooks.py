"""Completion webhooks: where they may go, how they are signed, and their delivery.

- Where: `LIPSYNC_WEBHOOK_ALLOW` lists URL prefixes, `scheme://host[:port][/path/]`. A webhook URL
  must match one in scheme, host, port (the scheme's default when not written) and path prefix, so
  an allowed host's other services (another port, another path) stay out of reach. URLs with
  user info (which would become an Authorization header), `.`/`..` segments, backslashes, encoded
  separators, dots or percent signs (`..%2F`, `%252e`: a proxy that decodes them leaves the prefix)
  or anything urllib cannot parse are refused with a 422.
- Signed per tenant: each tenant's secret is derived from the operator's `LIPSYNC_WEBHOOK_SECRET`
  and its name (a tenant reads its own at `GET /v1/webhook-secret`), so no tenant can sign another's
  events. The header `X-Lipsync-Signature: t=<unix seconds>,v1=<hex>` carries
  HMAC-SHA256(secret, "<t>." + body); a receiver recomputes it and refuses a `t` older than its
  tolerance (replays), as `verify_signature` does.
- Delivery: POST, no redirects, bounded time; a failure raises so the queue retries it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

from lipsync_triton import log
from lipsync_triton.errors import InputError
from .db import Job, session_scope
from .jobs import job_view
from .settings import Settings

SIGNATURE_HEADER = "X-Lipsync-Signature"
TOLERANCE_S = 300
DEFAULT_PORTS = {"http": 80, "https": 443}
ENCODED_SEPARATORS = re.compile(r"%(2f|5c|2e|25)", re.IGNORECASE)  # '/', '\\', '.', and '%' itself (double encoding)


@dataclass(frozen=True)
class WebhookPrefix:
    scheme: str
    host: str
    port: int
    path: str  # a prefix; "/" allows every path

    def allows(self, other: "WebhookPrefix") -> bool:
        base = self.path if self.path.endswith("/") else self.path + "/"
        return ((self.scheme, self.host, self.port) == (other.scheme, other.host, other.port)
                and (self.path in ("", "/") or other.path == self.path or other.path.startswith(base)))


def parse(url: str) -> WebhookPrefix:
    """`url` as scheme, host, port and path; ValueError naming what is wrong."""
    if not url or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError("it is empty or holds spaces or control characters")
    if not url.isascii():  # look-alike characters (a fullwidth '#' or '@') can move the host or the path
        raise ValueError("it must be ASCII: percent-encode the path and write the host in its IDNA form")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a broken IPv6 literal, a port out of range, characters NFKC would change
        raise ValueError(f"it cannot be parsed ({exc})") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError("it must be an http(s) URL with a host")
    if "@" in parts.netloc:
        raise ValueError("it must not carry a user name or password")
    if {".", ".."} & set(parts.path.split("/")) or "\\" in parts.path or ENCODED_SEPARATORS.search(parts.path):
        # A proxy or server that decodes them would route /hooks/..%2Fadmin to /admin: outside the prefix
        raise ValueError("its path must not hold '.' or '..' segments, backslashes, or encoded '/', '\\', '.' or '%'")
    return WebhookPrefix(parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme], parts.path or "/")


def allowed_prefixes(settings: Settings) -> list[WebhookPrefix]:
    prefixes = []
    for entry in filter(None, (e.strip() for e in settings.webhook_allow.split(","))):
        try:
            prefixes.append(parse(entry))
        except ValueError as exc:
            raise ValueError(f"LIPSYNC_WEBHOOK_ALLOW entry {entry!r}: {exc}") from None
    return prefixes


def check_webhook(url: str | None, settings: Settings) -> str | None:
    """The webhook URL of a submit, or an InputError (422) saying why it is refused."""
    if not url:
        return None
    if not settings.webhook_secret or not settings.webhook_allow:
        raise InputError("webhooks are off on this service (the operator sets LIPSYNC_WEBHOOK_ALLOW and LIPSYNC_WEBHOOK_SECRET)")
    try:
        target = parse(url)
    except ValueError as exc:
        raise InputError(f"webhook_url is refused: {exc}") from None
    if not any(prefix.allows(target) for prefix in allowed_prefixes(settings)):
        raise InputError(f"webhook_url {target.scheme}://{target.host}:{target.port}{target.path} is not allowed; "
                         "the operator lists allowed URL prefixes in LIPSYNC_WEBHOOK_ALLOW")
    return url


def tenant_secret(master: str, tenant: str) -> str:
    """The tenant's signing secret: derived, so it needs no storage and a master change rotates all."""
    return hmac.new(master.encode(), f"lipsync-webhook:{tenant}".encode(), hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header's value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: float = TOLERANCE_S, now: float | None = None) -> bool:
    """What a receiver does: the signature matches and its timestamp is recent (no replay)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def deliver(job_id: str, settings: Settings) -> None:
    with session_scope(settings.database) as s:
        job = s.get(Job, job_id)
        if job is None or not job.webhook_url:
            return
        url, tenant, body = job.webhook_url, job.tenant, json.dumps({"event": "job.finished", "job": job_view(job)}).encode()
    try:
        check_webhook(url, settings)
    except InputError:
        log.event("webhook_refused", job=job_id, reason="URL no longer allowed")
        return
    response = httpx.post(url, content=body, timeout=10.0, follow_redirects=False,
                          headers={"Content-Type": "application/json",
                                   SIGNATURE_HEADER: sign(tenant_secret(settings.webhook_secret, tenant), body)})
    response.raise_for_status()
    log.event("webhook_delivered", job=job_id, status=response.status_code)
