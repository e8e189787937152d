"""Locate the Triton 2.51 server that the `nvidia-pytriton==0.7.0` wheel ships, and prepare it.

Why this layout: the wheel carries a complete tritonserver with the Python backend; we install it
with `--no-deps` into the project's venv and use only its binaries (pytriton's own Python package
and its dependencies are never imported). The Python-backend stub embeds libpython3.11 and finds
numpy/onnxruntime through the venv that is ACTIVE (first on PATH) when the server starts, so the
server runs in the same venv as the client. That venv pins numpy<2, which both the stub and
tritonclient 2.51 require.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from lipsync_triton.errors import LipsyncError


@dataclass(frozen=True)
class TritonInstall:
    root: Path  # .../site-packages/pytriton/tritonserver
    libs: Path  # .../site-packages/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"


def find_triton() -> TritonInstall:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise LipsyncError("tritonserver not installed: run `make setup` (installs nvidia-pytriton==0.7.0 --no-deps)")
    pkg = Path(list(spec.submodule_search_locations)[0])
    install = TritonInstall(pkg / "tritonserver", pkg.parent / "nvidia_pytriton.libs")
    if not install.binary.is_file():
        raise LipsyncError(f"{install.binary} missing: reinstall with `pip install --no-deps --force-reinstall nvidia-pytriton==0.7.0`")
    return install


def python_backend_dir(install: TritonInstall, dest: Path | None = None) -> Path:
    """A backend directory `B/python/` with the backend library, its utils and the stub for this Python."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise LipsyncError(f"no Triton Python-backend stub for Python {version}; use Python 3.10-3.13")
    dest = dest or Path(sys.prefix) / "share" / "lipsync-triton" / "backends"
    target = dest / "python"
    target.mkdir(parents=True, exist_ok=True)
    sources = [install.root / "backends" / "python" / "libtriton_python.so",
               install.root / "backends" / "python" / "triton_python_backend_utils.py", stub]
    for src in sources:
        dst = target / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            tmp = dst.with_suffix(".tmp")
            shutil.copy2(src, tmp)
            tmp.replace(dst)
    return dest


def server_environment(install: TritonInstall) -> dict[str, str]:
    """The environment the server and its stubs need: this venv active, the wheel's libraries found."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = sys.prefix
    env.pop("PYTHONHOME", None)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(install.libs), env.get("LD_LIBRARY_PATH", "")) if p)
    return env
