"""The README's examples run as written (with the test server's URL and sample files)."""
import re
import shlex
import shutil
import subprocess

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _workdir(tmp_path, media):
    (tmp_path / "out").mkdir()
    shutil.copy(media["clip"], tmp_path / "out" / "presenter.mp4")
    shutil.copy(media["speech"], tmp_path / "out" / "speech.wav")
    return tmp_path


def test_readme_opens_with_the_two_commands():
    first = _blocks("bash")[0].splitlines()
    assert first[0].startswith("make demo") and first[1].startswith("make test")
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_python_api_example(triton, media, tmp_path, monkeypatch):
    (code,) = _blocks("python")
    work = _workdir(tmp_path, media)
    monkeypatch.chdir(work)
    exec(compile(code.replace("127.0.0.1:8001", triton.grpc_url), "README.md", "exec"), {})
    assert (work / "out" / "api.mp4").stat().st_size > 1000


def test_generate_command_example(triton, media, tmp_path):
    line = next(l for b in _blocks("bash") for l in b.splitlines() if l.startswith(".venv/bin/lipsync generate"))
    work = _workdir(tmp_path, media)
    argv = shlex.split(line.replace("127.0.0.1:8001", triton.grpc_url))
    argv[0] = str(ROOT / argv[0])
    proc = subprocess.run(argv + ["--quiet", "--no-cache"], cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (work / "out" / "result.mp4").stat().st_size > 1000


def test_export_command_example(tmp_path):
    line = next(l for b in _blocks("bash") for l in b.splitlines() if l.startswith(".venv/bin/lipsync export --random-weights"))
    argv = shlex.split(line.split("#")[0])
    argv[0] = str(ROOT / argv[0])
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "model_repository" / "wav2lip" / "config.pbtxt").is_file()
