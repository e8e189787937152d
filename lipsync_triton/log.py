"""Structured logs on stdout: one line per event, `key=value` (the CLI's default) or JSON lines
(`LIPSYNC_LOG_FORMAT=json`, the service's default) for a container platform's collector."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

_quiet = False
_json = os.environ.get("LIPSYNC_LOG_FORMAT", "").lower() == "json"


def set_format(name: str) -> None:
    global _json
    _json = name.lower() == "json"


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return json.dumps(text)
    return text


def event(name: str, **fields: Any) -> None:
    """Log one event as `ts=.. event=NAME k=v ...` on stdout."""
    if _quiet:
        return
    if _json:
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": name, **fields}
        print(json.dumps(record, default=str), file=sys.stdout, flush=True)
        return
    parts = [f"ts={time.strftime('%Y-%m-%dT%H:%M:%S')}", f"event={name}"]
    parts += [f"{k}={_fmt(v)}" for k, v in fields.items()]
    print(" ".join(parts), file=sys.stdout, flush=True)


def warn(message: str, **fields: Any) -> None:
    """A loud notice that must be seen even in quiet mode (e.g. random weights in use)."""
    if _json:
        print(json.dumps({"event": "warning", "message": message, **fields}, default=str), file=sys.stdout, flush=True)
        return
    parts = ["event=warning", f"message={_fmt(message)}"] + [f"{k}={_fmt(v)}" for k, v in fields.items()]
    print(" ".join(parts), file=sys.stdout, flush=True)
