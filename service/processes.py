"""`lipsync api` and `lipsync worker`: the service's processes.

`lipsync api` runs the REST API and web UI (uvicorn) in the main process and starts its worker
processes (and, with --model-repository, the embedded tritonserver) as children that get SIGTERM
if it dies. A worker runs jobs on threads from the Huey queue, waits for Triton's models before
taking work (worker_context.TritonGate), runs the deployment's sweeps (sweeps.py), and on shutdown
hands its running jobs back to the queue. Only `lipsync migrate` and `lipsync api` (unless
LIPSYNC_AUTO_MIGRATE=false) change the database's schema; a worker checks it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from lipsync_triton import log
from lipsync_triton.errors import LipsyncError
from lipsync_triton.process_guard import guarded_server, niced
from .queue import JobQueue
from .settings import Settings, get_settings
from .slow_clients import slow_client_protocol
from .tenants import Tenants, is_loopback

SCHEMA_WAIT_S = 120.0  # a worker started beside a migration waits for it this long


def _service_settings(triton_urls: list[str] | None) -> Settings:
    """The settings of this process: the environment's, with the command line's Triton URLs (the
    service logs JSON lines unless LIPSYNC_LOG_FORMAT says otherwise)."""
    settings = get_settings()
    log.set_format(settings.log_format)
    return settings.model_copy(update={"triton_urls": ",".join(triton_urls)}) if triton_urls else settings


def run_api(host: str, port: int, triton_urls: list[str] | None = None, model_repository: Path | None = None,
            worker_processes: int | None = None, triton_address: str = "127.0.0.1") -> int:
    import uvicorn

    from .api import create_app
    from .schema import check_schema, migrate

    log.set_format(get_settings().log_format)  # every line of the service in one format, the first ones too
    server = None
    if model_repository is not None:
        from lipsync_triton.serving.server import TritonServer

        _export_if_missing(model_repository, get_settings().checkpoint)
        server = TritonServer(model_repository, log_path=None, address=triton_address,
                              nice=get_settings().background_nice).start(wait=False)  # UI: "model initialising"
        triton_urls = [server.grpc_url]
    settings = _service_settings(triton_urls)
    Tenants(settings).check_startup(host, settings.local_only)
    if settings.auto_migrate:  # the single-box default; a deployment's migration job runs `lipsync migrate`
        migrate(settings.database)
    else:
        check_schema(settings.database)
    count = settings.worker_processes if worker_processes is None else worker_processes
    # Workers read the same environment, told the Triton URLs this command was given.
    worker_env = {**os.environ, "LIPSYNC_TRITON_URLS": settings.triton_urls,
                  "LIPSYNC_LOG_FORMAT": settings.log_format}
    # Generation runs at a lower CPU priority than the API: a burst of submits and polls is answered
    # in milliseconds even while jobs keep every core busy (perf/BENCHMARKS.md, job service under load).
    workers = [subprocess.Popen(guarded_server(niced([sys.executable, "-m", "lipsync_triton.cli", "worker"], settings.background_nice)),
                                env=worker_env, process_group=0) for _ in range(count)]
    log.event("api_starting", host=host, port=port, workers=count, triton=",".join(settings.triton),
              database=settings.database.split("://")[0], queue=settings.queue_url.split("://")[0] or "sqlite",
              storage=settings.storage.split("://")[0] if "://" in settings.storage else "local")
    loopback = host if is_loopback(host) else "127.0.0.1"
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else loopback}:{port}"
    app = create_app(settings, queue=JobQueue(settings), api_base=base)
    app.router.add_event_handler("startup", lambda: _banner(base, settings, server is not None))
    try:
        _uvicorn_server()(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                         http=slow_client_protocol(settings.header_timeout_s, settings.body_timeout_s),
                                         timeout_keep_alive=5)).run()
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # running jobs go back to the queue at once
        for proc in workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if server is not None:
            server.stop()
    log.event("api_stopped")
    return 0


def _banner(base: str, settings: Settings, own_triton: bool) -> None:
    """What a person starting the service reads: where to go, and where its Triton listens (the
    embedded one's port is chosen at start: `lipsync batch --url` needs it). On stderr, beside the logs."""
    triton = ",".join(settings.triton)
    print(f"lipsync api: open {base}/ui (web UI), {base}/docs (REST API), {base}/live (live mode)\n"
          f"lipsync api: Triton gRPC {'(started here) ' if own_triton else ''}at {triton}: "
          f"lipsync batch --manifest CSV --out DIR --url {settings.triton[0]}", file=sys.stderr, flush=True)


def _export_if_missing(repository: Path, checkpoint: str) -> None:
    """Serve the weights the operator named: a first start (the all-in-one image, `make service`)
    exports LIPSYNC_CHECKPOINT's weights, or random ones with a loud warning; a repository exported
    from other weights than LIPSYNC_CHECKPOINT's is exported again; a LIPSYNC_CHECKPOINT that is not
    a file is an error (never a silent fallback to the old weights)."""
    from lipsync_triton.export.repository import ExportOptions, export_repository
    from lipsync_triton.files import file_sha256

    if checkpoint and not Path(checkpoint).is_file():
        raise LipsyncError(f"LIPSYNC_CHECKPOINT={checkpoint} is not a file: point it at wav2lip_gan.pth "
                           "(or unset it to serve what is exported)")
    if (repository / "wav2lip" / "config.pbtxt").is_file():
        try:
            exported = json.loads((repository / "export.json").read_text()).get("checkpoint_sha256", "")
        except (OSError, ValueError):
            exported = None  # not written by this version's export: keep it unless a checkpoint is named
        if not checkpoint:
            if exported == "":
                log.warn("serving RANDOM Wav2Lip weights (the mouth will be a blur); set LIPSYNC_CHECKPOINT for real lip-sync",
                         repository=str(repository))
            return
        if exported == file_sha256(checkpoint):
            return
        log.event("re_export", reason="LIPSYNC_CHECKPOINT differs from the exported weights", repository=str(repository))
    elif not checkpoint:
        log.warn("no model repository yet: exporting RANDOM Wav2Lip weights (the mouth will be a blur); "
                 "set LIPSYNC_CHECKPOINT=/path/to/wav2lip_gan.pth for real lip-sync", repository=str(repository))
    export_repository(ExportOptions(out=repository, profile="cpu", checkpoint=Path(checkpoint) if checkpoint else None,
                                    random_weights=not checkpoint))


def _uvicorn_server():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after shutting down, which would kill this process before it
        stops its workers and tritonserver; here a signal only asks the server to exit (twice: at once)."""

        @contextmanager
        def capture_signals(self):
            def handle(_signum, _frame) -> None:
                self.force_exit = self.should_exit
                self.should_exit = True

            previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def run_worker(threads: int | None = None) -> int:
    from .runner import release_active_runs
    from .schema import wait_for_schema
    from .sweeps import run_sweeper
    from .worker_context import context_for

    settings = _service_settings(None)
    queue = JobQueue(settings)
    wait_for_schema(settings.database, SCHEMA_WAIT_S)  # `lipsync migrate` (or `lipsync api`) migrates, never a worker
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    context_for(settings).gate.wait(stop)
    signal.signal(signal.SIGTERM, previous)
    if stop.is_set():
        return 0
    sweeper = threading.Thread(target=run_sweeper, args=(queue, stop), name="sweeper", daemon=True)
    sweeper.start()
    log.event("worker_started", threads=threads or settings.workers, pid=os.getpid())
    # With a drain time, SIGTERM is Huey's graceful stop: no new task, running ones finish (up to the
    # drain time); whatever still runs then is handed back below, as at once without one.
    drain = {"graceful_signal": "TERM", "shutdown_timeout": settings.worker_drain_s} if settings.worker_drain_s > 0 else {}
    consumer = queue.huey.create_consumer(workers=threads or settings.workers, worker_type="thread", periodic=True,
                                          initial_delay=0.1, backoff=1.15, max_delay=1.0, check_worker_health=True, **drain)
    try:
        consumer.run()
    finally:
        stop.set()
        release_active_runs()
        log.event("worker_stopped", pid=os.getpid())
    return 0
