"""Structured logs through the standard `logging` module: one record per event, on the logger
"lipsync_triton", with the event's fields in `record.fields`.

A program that uses the Python API configures logging as usual (levels, handlers, or nothing: then
events at INFO stay silent and only warnings reach stderr). The `lipsync` command and the service's
processes call `configure`: `ts=... level=... event=...` lines (logfmt, the CLI's default) or JSON lines
(`LIPSYNC_LOG_FORMAT=json`, the service's default) on stdout, for a container platform's collector.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER = logging.getLogger("lipsync_triton")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return json.dumps(text)
    return text


def _stamp(record: logging.LogRecord) -> str:
    """UTC with milliseconds and a Z: lines from several machines and time zones sort together."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _level(record: logging.LogRecord) -> str:
    return record.levelname.lower()


def _event(record: logging.LogRecord) -> str:
    return getattr(record, "event", None) or record.getMessage()


class LogfmtFormatter(logging.Formatter):
    """`ts=... event=NAME k=v ...` (values with spaces, quotes or '=' are JSON-quoted)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        return " ".join([f"ts={_stamp(record)}", f"level={_level(record)}", f"event={_event(record)}"] + [f"{k}={_fmt(v)}" for k, v in fields.items()])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: {"ts", "level", "event", ...fields}."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": _stamp(record), "level": _level(record), "event": _event(record),
                           **getattr(record, "fields", {})}, default=str)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when the record comes (flushed per line)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # not setStream: it flushes the old stream, which may be closed (a test's capture)
        super().emit(record)


def configure(fmt: str = "logfmt", quiet: bool = False) -> None:
    """Install this package's own handler on stdout (replacing an earlier one of ours): `fmt` is
    "json" or "logfmt"; `quiet` keeps only warnings (the random-weights notice must be seen)."""
    for handler in [h for h in LOGGER.handlers if isinstance(h, _StdoutHandler)]:
        LOGGER.removeHandler(handler)
    handler = _StdoutHandler()
    handler.setFormatter(JsonFormatter() if fmt.lower() == "json" else LogfmtFormatter())
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO)
    LOGGER.propagate = False


def set_format(name: str) -> None:
    configure(name, quiet=LOGGER.level == logging.WARNING)


def set_quiet(quiet: bool) -> None:
    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO)


def event(name: str, level: str = "info", **fields: Any) -> None:
    """Log one event with its fields (`level`: "info", "warning" or "error")."""
    LOGGER.log(logging.getLevelName(level.upper()), name, extra={"event": name, "fields": fields})


def warn(message: str, **fields: Any) -> None:
    """A loud notice that must be seen even in quiet mode (e.g. random weights in use)."""
    # The message is the record's text, so a program without logging set up still sees it on stderr.
    LOGGER.warning(message, extra={"event": "warning", "fields": {"message": message, **fields}})
