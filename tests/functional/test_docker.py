"""The image installs the project itself; the host's environment and outputs stay out of its context."""
import fnmatch
import re
import tomllib
from pathlib import Path

from conftest import ROOT


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for the simple patterns used here: a path is out if it or a parent folder matches."""
    parts = Path(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(c, p) or fnmatch.fnmatch(c, p.removeprefix("**/")) or
               fnmatch.fnmatch(Path(c).name, p.removeprefix("**/")) for c in candidates for p in patterns)


def test_build_context_leaves_host_state_out():
    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    for host_state in (".venv/bin/python", "out/demo.mp4", ".git/HEAD", "client/__pycache__/x.pyc", ".pytest_cache/v",
                       "perf/results/work/model_repository/export.json", "wav2lip_gan.pth"):
        assert _ignored(host_state, patterns), host_state
    for source in ("pyproject.toml", "Makefile", "client/generate.py", "export/model_config.py"):
        assert not _ignored(source, patterns), source


def test_image_installs_the_project_with_its_own_setup():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^RUN make setup", dockerfile, re.M)
    assert ".venv" not in " ".join(l for l in dockerfile.splitlines() if l.startswith("COPY"))
    folders = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    for package in folders:
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.M), package
