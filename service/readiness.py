"""What /readyz checks: Triton's models ready on at least one server, storage, queue and database reachable."""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import text

from lipsync_triton.client.triton_client import DETECTOR_MODEL, WAV2LIP_MODEL, TritonPool
from lipsync_triton.errors import LipsyncError
from .db import engine_for
from .settings import Settings

if TYPE_CHECKING:
    from .queue import JobQueue
from .storage import Storage


class TritonCheck(NamedTuple):
    ok: bool
    detail: str
    weights: str = "unknown"  # the served Wav2Lip weights: "random" or "checkpoint sha256:..."


def triton_ready(urls: list[str]) -> TritonCheck:
    """Both models ready on at least one server: the client's own check (every URL form it accepts,
    `dns://NAME:PORT` included, with the same gRPC channel settings), and which weights it serves."""
    try:
        models = TritonPool(urls, retry_seconds=0).check_ready((WAV2LIP_MODEL, DETECTOR_MODEL))
    except LipsyncError as exc:
        return TritonCheck(False, str(exc).splitlines()[0][:300] if str(exc) else "unreachable")
    except Exception as exc:  # any failure to ask means not ready
        return TritonCheck(False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'unreachable'}")
    return TritonCheck(True, "ready", models[WAV2LIP_MODEL].weights)


def check_all(settings: Settings, queue: "JobQueue") -> tuple[dict[str, tuple[bool, str]], str]:
    """Each check's (ok, detail), and the served weights (see TritonCheck)."""
    triton = triton_ready(settings.triton)
    checks: dict[str, tuple[bool, str]] = {"triton": (triton.ok, triton.detail)}
    for name, probe in (("storage", lambda: Storage(settings.storage, settings.s3_endpoint_url).ping()),
                        ("queue", queue.depth),
                        ("database", lambda: _db_ping(settings.database))):
        try:
            probe()
            checks[name] = (True, "ok")
        except Exception as exc:
            checks[name] = (False, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
    return checks, triton.weights


def _db_ping(url: str) -> None:
    with engine_for(url).connect() as connection:
        connection.execute(text("SELECT 1"))
