"""A real `lipsync api` (and workers) as a child process, talked to over HTTP: the harness of the
service tests. Each instance has its own data directory and settings from environment variables."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lipsync_triton.service.db import FINAL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, data_dir: Path, triton_url: str, keys: str = "acme:key-acme-for-tests,globex:key-globex-for-tests", workers: int = 1,
                 extra_env: dict | None = None, args: list[str] | None = None):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "LIPSYNC_DATA_DIR": str(self.data_dir), "LIPSYNC_API_KEYS": keys,
                    "LIPSYNC_TRITON_URLS": triton_url, "LIPSYNC_WORKER_PROCESSES": str(workers), "LIPSYNC_WORKERS": "2",
                    "LIPSYNC_RETRY_DELAY_S": "1", **(extra_env or {})}
        self.args = args or []
        self.proc: subprocess.Popen | None = None
        self.log = self.data_dir.parent / f"api-{self.port}.log"

    def start(self, timeout: float = 120.0) -> "Service":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "lipsync_triton.cli", "api", "--port", str(self.port), *self.args],
                                     env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lipsync api exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"lipsync api did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def client(self, key: str | None = "key-acme-for-tests") -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=120, headers={"Authorization": f"Bearer {key}"} if key else {})

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def submit(client: httpx.Client, face: Path, audio: Path, **options) -> str:
    with open(face, "rb") as f, open(audio, "rb") as a:
        response = client.post("/v1/jobs", files={"face": (face.name, f), "audio": (audio.name, a)},
                               data={k: str(v) for k, v in options.items()})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_for(client: httpx.Client, job_id: str, states=FINAL, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/v1/jobs/{job_id}").json()
        if view["status"] in states:
            return view
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {view['status']} after {timeout:.0f} s")


def wait_running(client: httpx.Client, job_id: str, progress: float = 0.05, timeout: float = 180.0) -> None:
    """Until the job is running and past `progress` (a fault injected then hits a job mid-run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/v1/jobs/{job_id}")
        if view.status_code == 200 and view.json()["status"] == "running" and view.json()["progress"] > progress:
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got past {progress:.0%}")


def wait_for_batch(client: httpx.Client, batch_id: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/v1/batches/{batch_id}").json()
        if view["done"]:
            return view
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} not done after {timeout:.0f} s")


def ui_sign_in(page, base: str, tenant: str = "acme", key: str = "key-acme-for-tests") -> None:
    """Open the web UI in a Playwright page and sign in with the tenant's name and API key."""
    page.goto(f"{base}/ui/")
    page.locator("input[type=text]").first.fill(tenant)
    page.locator("input[type=password]").fill(key)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#model-status", timeout=60000)
