"""What the service's work (a job, a presenter's registration, a live session) is given, built in
one place from Settings: storage, the pipeline's options, a temporary folder, and the Triton gate.

The gate is how an outage is waited out instead of failing work: while no server has the models
ready (down, restarting, still loading), a worker's threads wait at the gate before they claim a
job, so jobs stay queued and no attempt is used; running jobs wait inside the client (their
requests retry for the outage budget, `LIPSYNC_TRITON_OUTAGE_S`, counted from the last answer)."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lipsync_triton import log
from lipsync_triton.client.options import GenerateOptions
from .readiness import triton_ready
from .settings import Settings
from .storage import Storage

GATE_RECHECK_S = 2.0  # the threads of one worker share one readiness check per this period
GATE_MAX_PAUSE_S = 30.0
GATE_LOG_S = 30.0


class TritonGate:
    """Open while at least one Triton server has the models ready; shared by a process's threads."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self._lock = threading.Lock()
        self._checked_at = -GATE_RECHECK_S
        self._ready = False
        self._detail = ""

    def ready(self) -> bool:
        with self._lock:
            if time.monotonic() - self._checked_at >= GATE_RECHECK_S:
                check = triton_ready(self.urls)
                self._ready, self._detail, self._checked_at = check.ok, check.detail, time.monotonic()
            return self._ready

    def wait(self, stop: threading.Event) -> bool:
        """Until the gate is open (True) or `stop` is set (False); the pause grows to 30 s."""
        pause, started, last_log = 1.0, time.monotonic(), time.monotonic()
        while not stop.is_set():
            if self.ready():
                if time.monotonic() - started > GATE_LOG_S:
                    log.event("triton_back", waited_s=round(time.monotonic() - started, 1))
                return True
            if time.monotonic() - last_log >= GATE_LOG_S:  # never at once: a server that is starting is normal
                log.event("worker_waiting_for_triton", detail=self._detail, waited_s=round(time.monotonic() - started, 1),
                          level="warning")
                last_log = time.monotonic()
            stop.wait(pause)
            pause = min(pause * 2, GATE_MAX_PAUSE_S)
        return False


@dataclass
class WorkerContext:
    """One per worker process (and one in the API, for live sessions)."""

    settings: Settings
    storage: Storage = field(init=False)
    gate: TritonGate = field(init=False)

    def __post_init__(self) -> None:
        self.storage = Storage(self.settings.storage, self.settings.s3_endpoint_url)
        self.gate = TritonGate(self.settings.triton)

    def generate_options(self, **fields: Any) -> GenerateOptions:
        """The pipeline's options for service work: the caller's fields (a job's options, its trace)
        plus what the deployment decides (cache folder, media limits, the outage budget)."""
        outage = self.settings.triton_outage_s
        return GenerateOptions(**{"cache_dir": self.settings.data_dir / "presenters", "limits": self.settings.media_limits,
                                  "retry_seconds": outage, "server_wait_s": outage, **fields})

    @contextmanager
    def work_dir(self, prefix: str) -> Iterator[Path]:
        """A private temporary folder under DATA_DIR/tmp, removed afterwards whatever happens."""
        base = self.settings.data_dir / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)


_contexts: dict[int, WorkerContext] = {}
_contexts_lock = threading.Lock()


def context_for(settings: Settings) -> WorkerContext:
    """The process's context for these settings (built once: Storage and the gate are shared)."""
    with _contexts_lock:
        context = _contexts.get(id(settings))
        if context is None or context.settings is not settings:
            context = _contexts[id(settings)] = WorkerContext(settings)
        return context
