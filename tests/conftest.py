"""Shared fixtures: one random-weight export, one real tritonserver, small media samples."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lipsync_triton.export.repository import ExportOptions, export_repository
from lipsync_triton.samples import write_presenter_clip, write_speech
from lipsync_triton.serving.server import TritonServer

ROOT = Path(__file__).resolve().parents[1]
SHORT_TEXT = "Hello there. This is a short test."


@pytest.fixture(scope="session")
def exported_repo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model_repository"
    export_repository(ExportOptions(out=out, profile="cpu", random_weights=True, seed=0))
    return out


@pytest.fixture(scope="session")
def triton(exported_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "tritonserver.log"
    server = TritonServer(exported_repo, log_path=log).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        "clip": write_presenter_clip(d / "presenter.mp4", 2.0, fps=25, width=640, height=360),
        "speech": write_speech(d / "speech.wav", SHORT_TEXT),
        "dir": d,
    }


@pytest.fixture()
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


def tone(path: Path, seconds: float, extra: list[str] | None = None) -> Path:
    """A sine tone as speech stand-in (16 kHz mono unless `extra` says otherwise): any length, instantly."""
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=200:duration={seconds}",
                    *(extra or ["-ar", "16000"]), str(path)], check=True)
    return path


def decode_frames(path: Path, limit: int | None = None) -> np.ndarray:
    from lipsync_triton.preprocessing.video import FrameSource

    frames = []
    for frame in FrameSource(path).frames():
        frames.append(frame)
        if limit and len(frames) >= limit:
            break
    return np.stack(frames)


os.environ.setdefault("LIPSYNC_CACHE_DIR", str(ROOT / ".pytest_cache" / "lipsync-presenters"))


# Tests that start a tritonserver, the job service or another program: `pytest -m "not server"`
# runs the rest (in-process logic, parsing, options, media helpers) in well under a minute.
SERVER_FIXTURES = {"triton", "exported_repo", "service", "two_servers", "scaled_service", "s3_server", "postgres_db"}
SUBPROCESS_MODULES = {"test_readme", "test_processes", "test_tracing", "test_live", "test_live_service", "test_deploy", "test_docker", "test_faults", "test_export",
                      "test_checkpoint", "test_service", "test_service_scale_out", "test_hostile_inputs", "test_security",
                      "test_serving", "test_scale_out_client", "test_attacks_round2"}


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "server: starts tritonserver, the job service or another program (slow)")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or item.module.__name__ in SUBPROCESS_MODULES:
            item.add_marker(pytest.mark.server)
