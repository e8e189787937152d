"""W3C trace context (`traceparent`) carried by a job from the API through the worker to Triton.

A job gets the caller's `traceparent` (a tracing proxy or client in front of the API) or a new
one at submit; the worker sends it as gRPC metadata with every inference request, and Triton with
`--trace-config mode=opentelemetry` makes its spans children of it, so a job's trace spans
API -> worker -> Triton in the operator's tracing backend. Only the header's format is decided
here (https://www.w3.org/TR/trace-context/): no tracing SDK runs in the service.
"""
from __future__ import annotations

import re
import secrets

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
HEADER = "traceparent"


def valid_traceparent(value: str | None) -> str | None:
    """The header if it is a well-formed version-00 traceparent with non-zero ids, else None
    (a malformed one is dropped, as the spec asks, and a new trace starts)."""
    match = _TRACEPARENT.match((value or "").strip().lower())
    if not match or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(0)


def new_traceparent() -> str:
    """A new sampled trace: random 16-byte trace id and 8-byte parent span id."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]
