"""Shared fixtures: one random-weight export, one real tritonserver, small media samples."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


def librosa_mel(wav):
    """The reference's own library, with its 0.7 default (reflect padding) set explicitly."""
    import librosa
    from scipy.signal import lfilter

    y = lfilter([1, -0.97], [1], wav)
    spec = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, window="hann", center=True, pad_mode="reflect")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ np.abs(spec))) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def new_postgres_database(prefix: str) -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL (dropped afterwards): its SQLAlchemy URL."""
    import uuid

    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def decode_frames(path: Path, limit: int | None = None) -> np.ndarray:
    from lipsync_triton.preprocessing.video import FrameSource

    frames = []
    for frame in FrameSource(path).frames():
        frames.append(frame)
        if limit and len(frames) >= limit:
            break
    return np.stack(frames)


os.environ.setdefault("LIPSYNC_CACHE_DIR", str(ROOT / ".pytest_cache" / "lipsync-presenters"))


# Two tiers, marked by folder (a new module is in the tier of the folder it is put in):
# tests/unit: in process, no server and no other program (logic, parsing, options, the lifecycle,
#   admission and error mapping on SQLite): `pytest tests/unit` or `-m unit`, about a minute;
# tests/functional: a real tritonserver, the job service, databases, browsers, other programs.
UNIT_DIR = ROOT / "tests" / "unit"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "unit: tests/unit: in process, no server or other program")
    config.addinivalue_line("markers", "functional: tests/functional: real servers, services and programs (slow)")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        unit = Path(str(item.fspath)).resolve().is_relative_to(UNIT_DIR)
        item.add_marker(pytest.mark.unit if unit else pytest.mark.functional)
