"""The container images, built and run here with Podman on a base made from Debian's packages
(mmdebstrap): the CPU all-in-one image serves a job from the host and stops cleanly on SIGTERM;
the API/worker image runs a worker for a service on the host. Skipped, with the reason, only where
the machine cannot run containers."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT
from service_harness import free_port, submit, wait_for

BASE = "localhost/debian-base:bookworm"
CPU_IMAGE = "localhost/lipsync-triton:cpu-test"
APP_IMAGE = "localhost/lipsync-triton-app:test"
GRACE_S = 60


def _podman(*args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}: {(done.stderr or done.stdout).strip()[-3000:]}")
    return done


def _why_no_containers() -> str | None:
    if not shutil.which("podman"):
        return "podman is not installed (make test installs it with Debian's podman, runc and mmdebstrap)"
    done = subprocess.run(["podman", "info", "--format", "json"], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return f"podman cannot run containers here: {(done.stderr.strip().splitlines() or ['no reason'])[-1][:200]}"
    return None


pytestmark = pytest.mark.skipif(_why_no_containers() is not None, reason=_why_no_containers() or "")


def _host_pip_build_args() -> list[str]:
    """The host's pip settings (a mirror, a wheel folder, a TLS-inspecting proxy's CA), mounted into
    the build read-only: the image installs what this machine's pip reaches."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    settings = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        settings[key.split(".")[-1]] = value.strip().strip("'")
    args: list[str] = []
    mounts: set[str] = set()
    if settings.get("cert") and Path(settings["cert"]).is_file():
        args += ["--build-arg", "PIP_CERT=/etc/ssl/host-pip-ca.crt", "--volume", f"{settings['cert']}:/etc/ssl/host-pip-ca.crt:ro"]
    links = [p for p in settings.get("find-links", "").split() if Path(p).is_dir()]
    if links:
        args += ["--build-arg", f"PIP_FIND_LINKS={' '.join(links)}"]
        mounts.update(links)
    indexes = [u for u in settings.get("extra-index-url", "").split() if u.startswith("file://") and Path(u[7:]).is_dir()]
    if indexes:
        args += ["--build-arg", f"PIP_EXTRA_INDEX_URL={' '.join(indexes)}"]
        mounts.update(str(Path(u[7:]).parent) for u in indexes)
    for path in sorted(mounts):
        args += ["--volume", f"{path}:{path}:ro"]
    return args


@pytest.fixture(scope="module")
def base_image(tmp_path_factory) -> str:
    if _podman("image", "exists", BASE, check=False).returncode != 0:
        tar = tmp_path_factory.mktemp("base") / "base.tar"
        subprocess.run(["mmdebstrap", "--variant=minbase", "bookworm", str(tar)], check=True, capture_output=True, timeout=900)
        _podman("import", str(tar), BASE)
    return BASE


def _build(dockerfile: str, tag: str, base: str) -> float:
    started = time.monotonic()
    # Docker format: OCI image configs have no HEALTHCHECK.
    _podman("build", "--format", "docker", "-f", f"docker/{dockerfile}", "-t", tag, "--build-arg", f"PYTHON_IMAGE={base}",
            *_host_pip_build_args(),
            str(ROOT), timeout=3000)
    return time.monotonic() - started


def _record(name: str, **facts) -> None:
    """Image size and build time, for the README (kept under .pytest_cache)."""
    out = ROOT / ".pytest_cache" / "images.json"
    out.parent.mkdir(exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[name] = facts
    out.write_text(json.dumps(data, indent=2))


def _size_mb(tag: str) -> float:
    return int(_podman("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip()) / 2**20


@pytest.fixture(scope="module")
def cpu_image(base_image) -> str:
    seconds = _build("Dockerfile", CPU_IMAGE, base_image)
    _record("cpu", build_s=round(seconds), size_mb=round(_size_mb(CPU_IMAGE)))
    return CPU_IMAGE


def _wait(predicate, timeout: float, what: str, container: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        state = _podman("inspect", container, "--format", "{{.State.Status}}", check=False).stdout.strip()
        if state not in ("running", "created", ""):
            logs = _podman("logs", "--tail", "30", container, check=False)
            raise AssertionError(f"{container} {state} while waiting for {what}: {logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        time.sleep(2)
    raise AssertionError(f"{container}: no {what} after {timeout:.0f} s")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_cpu_image_turns_healthy_serves_a_job_and_stops_on_sigterm_within_its_grace(cpu_image, media, tmp_path):
    name, port = f"lipsync-cpu-{free_port()}", free_port()
    volume = f"{name}-data"
    run = ["run", "-d", "--name", name, "--shm-size=1g", "-p", f"127.0.0.1:{port}:7860", "-v", f"{volume}:/data",
           "-e", "LIPSYNC_API_KEYS=acme:key-acme-for-tests", cpu_image]
    try:
        _podman(*run)
        base = f"http://127.0.0.1:{port}"
        # First start exports the (random-weight) repository into the volume, then Triton loads it.
        _wait(lambda: _podman("healthcheck", "run", name, check=False).returncode == 0, 900, "healthy health check", name)
        _wait(lambda: _ok(f"{base}/readyz"), 900, "ready models", name)
        with httpx.Client(base_url=base, timeout=120, headers={"Authorization": "Bearer key-acme-for-tests"}) as api:
            view = wait_for(api, submit(api, media["clip"], media["speech"]), timeout=600)
            assert view["status"] == "succeeded", view
            result = api.get(view["links"]["result"])
            assert result.status_code == 200 and result.content[4:8] == b"ftyp"
            running = submit(api, media["clip"], media["speech"])  # in flight when SIGTERM comes
        started = time.monotonic()
        _podman("stop", "--time", str(GRACE_S), name, timeout=GRACE_S + 60)
        stopped_after = time.monotonic() - started
        state = json.loads(_podman("inspect", name).stdout)[0]["State"]
        assert stopped_after < GRACE_S and state["ExitCode"] == 0, (stopped_after, state)
        _record("cpu_stop", seconds=round(stopped_after, 1), exit_code=state["ExitCode"])
        # Nothing lost: the job in flight was handed back (or finished) and completes after a restart.
        _podman("start", name)
        _wait(lambda: _ok(f"{base}/readyz"), 600, "ready models after restart", name)
        with httpx.Client(base_url=base, timeout=120, headers={"Authorization": "Bearer key-acme-for-tests"}) as api:
            assert wait_for(api, running, timeout=600)["status"] == "succeeded"
    finally:
        _podman("rm", "-f", "-t", "0", name, check=False)
        _podman("volume", "rm", "-f", volume, check=False)


def test_make_sbom_lists_the_images_python_and_debian_packages(cpu_image, tmp_path):
    done = subprocess.run(["make", "sbom", f"IMAGE={cpu_image}", f"OUT={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    sbom = json.loads((tmp_path / "sbom-image.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["metadata"]["component"]["name"] == cpu_image
    purls = {c["name"]: c["purl"] for c in sbom["components"]}
    assert purls["torch"].startswith("pkg:pypi/torch@2.13.0") and purls["openvino"].startswith("pkg:pypi/openvino@")
    assert purls["ffmpeg"].startswith("pkg:deb/debian/ffmpeg@") and "libpython3.11" in purls


def test_a_worker_from_the_app_image_runs_jobs_for_a_service_on_the_host(base_image, triton, media, tmp_path):
    """Host: the API (PostgreSQL, Redis, a storage folder shared with the container) and Triton.
    Container: `lipsync worker` from the API/worker image, on the host's network."""
    import uuid

    import psycopg

    from service_harness import Service

    seconds = _build("Dockerfile.app", APP_IMAGE, base_image)
    _record("app", build_s=round(seconds), size_mb=round(_size_mb(APP_IMAGE)))
    db = f"lipsync_image_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    files = tmp_path / "files"
    files.mkdir()
    files.chmod(0o777)  # the image's user (uid 10001) writes results here
    queue = f"imagetest{uuid.uuid4().hex[:6]}"
    env = {"LIPSYNC_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}", "LIPSYNC_QUEUE_URL": "redis://127.0.0.1:6379/0",
           "LIPSYNC_QUEUE_NAME": queue, "LIPSYNC_STORAGE_URL": str(files), "LIPSYNC_TRITON_URLS": triton.grpc_url}
    name = f"lipsync-worker-{free_port()}"
    try:
        with Service(tmp_path / "data", triton.grpc_url, workers=0, extra_env=env) as svc, svc.client() as api:
            _podman("run", "-d", "--name", name, "--network", "host", "-v", f"{files}:{files}",
                    *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], APP_IMAGE, "worker")
            view = wait_for(api, submit(api, media["clip"], media["speech"]), timeout=600)
            assert view["status"] == "succeeded", view
            logs = _podman("logs", name).stdout
            assert '"event": "job_succeeded"' in logs and view["id"] in logs  # the container's worker ran it
    finally:
        _podman("rm", "-f", "-t", "5", name, check=False)
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
