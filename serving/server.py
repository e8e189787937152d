"""Run a real tritonserver on a model repository: foreground (CLI) or managed (tests, demo, perf)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from lipsync_triton import log
from lipsync_triton.errors import LipsyncError
from lipsync_triton.process_guard import guarded_server, niced
from .triton_install import find_triton, python_backend_dir, server_environment

# Python-backend shared memory per model instance: a batch of 32 detector frames is ~24 MB.
SHM_DEFAULT_BYTES = 64 * 1024 * 1024
SHM_GROWTH_BYTES = 32 * 1024 * 1024


@dataclass
class Ports:
    grpc: int = 8001
    http: int = 8000
    metrics: int = 8002

    @classmethod
    def free(cls) -> "Ports":
        socks = [socket.socket() for _ in range(3)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in socks))
        finally:
            for s in socks:
                s.close()


LOOPBACK = "127.0.0.1"


def server_command(model_repository: Path, ports: Ports, extra: list[str] | None = None,
                   address: str = "127.0.0.1") -> tuple[list[str], dict]:
    """tritonserver's command line; `address` is what its gRPC, HTTP and metrics ports bind to."""
    install = find_triton()
    backends = python_backend_dir(install)
    cmd = [
        str(install.binary),
        f"--model-repository={model_repository}",
        f"--backend-directory={backends}",
        f"--grpc-port={ports.grpc}", f"--http-port={ports.http}", f"--metrics-port={ports.metrics}",
        f"--grpc-address={address}", f"--http-address={address}", f"--metrics-address={address}",
        f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
        f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
        "--strict-readiness=true", "--exit-on-error=true", "--log-info=true",
        # Clients ping every 10 s while a request waits (client/triton_client.py's keepalive): accepted,
        # where gRPC's default would close the connection after two pings of a slow request.
        "--grpc-http2-max-ping-strikes=0",
    ] + list(extra or [])
    return cmd, server_environment(install)


def check_repository(model_repository: Path) -> Path:
    model_repository = Path(model_repository).resolve()
    if not model_repository.is_dir():
        raise LipsyncError(f"model repository not found: {model_repository} (create one with `lipsync export`)")
    if not any(p.joinpath("config.pbtxt").is_file() for p in model_repository.iterdir() if p.is_dir()):
        raise LipsyncError(f"{model_repository} holds no model folder with a config.pbtxt; run `lipsync export --out {model_repository}`")
    return model_repository

def summarize_failure(lines: list[str]) -> str:
    """The most telling line of a failed start, for a one-line error."""
    for line in lines:
        if "failed to load" in line or "Poll failed for model" in line:
            return line.split("] ", 1)[-1].strip()[:400]
    for line in reversed(lines):
        if "error" in line.lower():
            return line.split("] ", 1)[-1].strip()[:400]
    return (lines[-1] if lines else "no output")[:400]


FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SHUTDOWN_GRACE_SECONDS = 30.0  # Triton drains in-flight requests; after this it is killed


def sweep_group(pgid: int | None) -> None:
    """SIGKILL whatever is left in tritonserver's process group: its Python-backend stubs do not
    exit when tritonserver dies abruptly (OOM killer, SIGKILL) and would each keep a model's memory."""
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def sweep_when_gone(proc: subprocess.Popen) -> threading.Thread:
    """When tritonserver exits, however it exits, sweep its group. The stubs also hold its stdout
    pipe open, so without this a reader of that pipe would never see the end of it."""
    def watch() -> None:
        proc.wait()
        sweep_group(proc.pid)

    thread = threading.Thread(target=watch, name="tritonserver-exit", daemon=True)
    thread.start()
    return thread


def serve_foreground(model_repository: Path, ports: Ports, address: str = "127.0.0.1") -> int:
    """`lipsync serve`: stream the server's log to stdout; non-zero with a one-line reason on failure.

    SIGTERM/SIGINT/SIGHUP (docker stop, Kubernetes, systemd, Ctrl-C) are forwarded to tritonserver,
    which shuts down cleanly; it is killed if it has not exited SHUTDOWN_GRACE_SECONDS later, and
    the command exits with its status. tritonserver gets SIGTERM from the kernel if this process
    dies without forwarding (SIGKILL), so it never outlives us holding the ports.
    """
    repo = check_repository(model_repository)
    cmd, env = server_command(repo, ports, address=address)
    log.event("server_start", repository=str(repo), address=address, grpc=ports.grpc, http=ports.http, metrics=ports.metrics)
    # Its own process group: a terminal's Ctrl-C reaches only us, and we forward it once.
    proc = subprocess.Popen(guarded_server(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, process_group=0)
    sweep_when_gone(proc)
    stopping = threading.Event()
    received: list[str] = []

    def forward(signum, _frame) -> None:
        # No logging here: a write to stdout from a signal handler can collide with the log loop's.
        received.append(signal.Signals(signum).name)
        if proc.poll() is None:
            proc.send_signal(signum)
        if not stopping.is_set():
            stopping.set()
            killer = threading.Timer(SHUTDOWN_GRACE_SECONDS, lambda: proc.poll() is None and proc.kill())
            killer.daemon = True
            killer.start()

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    tail: deque[str] = deque(maxlen=200)
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line.rstrip())
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sweep_group(proc.pid)
    if stopping.is_set():
        log.event("server_stopped", signals=",".join(received), exit_code=code)
        return code if code >= 0 else 128 - code
    if code != 0:
        raise LipsyncError(f"tritonserver exited with code {code}: {summarize_failure(list(tail))}")
    return 0


class TritonServer:
    """A managed tritonserver subprocess: start, wait until READY, stop. Used by the all-in-one
    service, tests, demo and perf; it listens on loopback only unless `address` says otherwise
    (its ports have no authentication: only its own host should reach them)."""

    def __init__(self, model_repository: Path, ports: Ports | None = None, log_path: Path | None = None,
                 address: str = LOOPBACK, extra_args: list[str] | None = None, nice: int = 0):
        self.repository = check_repository(model_repository)
        self.extra_args = list(extra_args or [])  # more tritonserver flags (tracing, metrics config)
        self.nice = nice  # a lower CPU priority than the process that starts it (the all-in-one service's API)
        self.address = address
        self.ports = ports or Ports.free()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._tail: deque[str] = deque(maxlen=400)
        self._reader: threading.Thread | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    def start(self, timeout: float = 300.0, wait: bool = True) -> "TritonServer":
        """Start tritonserver; with `wait`, return once READY (else at once: callers poll readiness)."""
        cmd, env = server_command(self.repository, self.ports, self.extra_args, address=self.address)
        self.proc = subprocess.Popen(guarded_server(niced(cmd, self.nice)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, process_group=0)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        sweep_when_gone(self.proc)
        if not wait:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                raise LipsyncError(f"tritonserver exited with code {self.proc.returncode}: {summarize_failure(list(self._tail))}")
            if self.ready():
                log.event("server_ready", grpc=self.grpc_url, http=self.http_url)
                return self
            time.sleep(0.5)
        self.stop()
        raise LipsyncError(f"tritonserver not ready after {timeout:.0f}s: {summarize_failure(list(self._tail))}")

    def _pump(self) -> None:
        sink = open(self.log_path, "a") if self.log_path else None
        try:
            for line in self.proc.stdout:
                self._tail.append(line.rstrip())
                if sink:
                    sink.write(line)
                    sink.flush()
        finally:
            if sink:
                sink.close()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self) -> list[str]:
        return list(self._tail)

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill(self) -> None:
        """SIGKILL the server with its backend stubs (a crash, as the tests and a dying node see it)."""
        if self.proc:
            sweep_group(self.proc.pid)
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader:
            self._reader.join(timeout=5)
        if self.proc:
            sweep_group(self.proc.pid)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
