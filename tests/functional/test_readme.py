"""The README's examples run as written (free ports, the test server's URL, sample files, --tiny for
the benchmarks), and every command block is either run here or marked illustrative with a reason."""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request

from lipsync_triton.export.checkpoint import random_state_dict, save_checkpoint
from lipsync_triton.serving.server import Ports

from conftest import ROOT

README = re.sub(r"^> ?", "", (ROOT / "README.md").read_text(), flags=re.M)  # blocks inside quotes count too
ILLUSTRATIVE = re.compile(r"<!-- illustrative: (.+?) -->\s*$")

# Each command line a user would type, by its start, and the test below that runs it.
EXECUTED = {
    "make demo": "test_make_demo_writes_the_demo_video",
    "make test": "(the command running this suite; .ci/run calls it)",
    "make sbom": "test_make_sbom_lists_the_environment",
    "LIPSYNC_CHECKPOINT=": "test_demo_with_a_checkpoint",
    ".venv/bin/lipsync export --checkpoint": "test_export_command_examples",
    ".venv/bin/lipsync export --random-weights": "test_export_command_examples",
    ".venv/bin/lipsync serve": "test_serve_command_example",
    ".venv/bin/lipsync generate": "test_generate_command_example",
    ".venv/bin/lipsync perf models": "test_perf_command_examples",
    ".venv/bin/lipsync perf e2e": "test_perf_command_examples",
    ".venv/bin/lipsync perf compare": "test_perf_command_examples",
    "make service": "test_make_service_and_the_curl_example",
    "JOB=$(curl": "test_make_service_and_the_curl_example",
    "until curl": "test_make_service_and_the_curl_example",
    "curl -s http://127.0.0.1:7860/v1/jobs/$JOB |": "test_make_service_and_the_curl_example",
    "curl -sf -o out/service.mp4": "test_make_service_and_the_curl_example",
    ".venv/bin/lipsync batch": "test_batch_command_example",
    ".venv/bin/lipsync perf service": "test_perf_service_example",
}


def _blocks(lang):
    """(code, illustrative reason or None) for each fenced block of `lang`."""
    found = []
    for match in re.finditer(rf"```{lang}\n(.*?)```", README, flags=re.S):
        before = README[:match.start()].rstrip().splitlines()
        marker = ILLUSTRATIVE.search(before[-1]) if before else None
        found.append((match.group(1), marker.group(1) if marker else None))
    return found


def _command(start):
    line = next(l for b, _ in _blocks("bash") for l in b.splitlines() if l.startswith(start))
    return line.split("  #")[0].strip()


def _argv(line):
    argv = shlex.split(line)
    if argv[0].startswith(".venv/"):
        argv[0] = str(ROOT / argv[0])
    return argv


def _workdir(tmp_path, media):
    (tmp_path / "out").mkdir(exist_ok=True)
    shutil.copy(media["clip"], tmp_path / "out" / "presenter.mp4")
    shutil.copy(media["speech"], tmp_path / "out" / "speech.wav")
    return tmp_path


def _wait_until_ok(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll `url` until it answers 200, the process exits, or `timeout` passes (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)


def test_every_command_block_is_run_or_marked_illustrative():
    for code, reason in _blocks("bash") + _blocks("python"):
        if reason:
            continue
        if code.lstrip().startswith(("from ", "import ")):
            continue  # python blocks: test_python_api_example
        for line in filter(str.strip, code.splitlines()):
            assert any(line.startswith(start) for start in EXECUTED), f"README command not run by any test: {line}"


def test_readme_opens_with_the_two_commands():
    first = _blocks("bash")[0][0].splitlines()
    assert first[0].startswith("make demo") and first[1].startswith("make test")
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _make_demo(tmp_path, env=None):
    argv = shlex.split(_command("make demo")) + [f"OUT={tmp_path / 'demo'}"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "demo" / "demo.mp4").stat().st_size > 10000
    return proc.stdout


def test_make_demo_writes_the_demo_video(tmp_path):
    assert "RANDOM" in _make_demo(tmp_path)


def test_demo_with_a_checkpoint(tmp_path):
    line = _command("LIPSYNC_CHECKPOINT=")
    checkpoint = tmp_path / "wav2lip_gan.pth"
    save_checkpoint(random_state_dict(7), checkpoint, data_parallel=True)
    assert line.startswith("LIPSYNC_CHECKPOINT=/path/to/wav2lip_gan.pth make demo")
    stdout = _make_demo(tmp_path, env=dict(os.environ, LIPSYNC_CHECKPOINT=str(checkpoint)))
    assert f"checkpoint {checkpoint}" in stdout and "weights=checkpoint" in stdout


def test_python_api_example(triton, media, tmp_path, monkeypatch):
    code = next(c for c, _ in _blocks("python") if "LipSyncClient" in c)
    work = _workdir(tmp_path, media)
    monkeypatch.chdir(work)
    exec(compile(code.replace("127.0.0.1:8001", triton.grpc_url), "README.md", "exec"), {})
    assert (work / "out" / "api.mp4").stat().st_size > 1000


def test_generate_command_example(triton, media, tmp_path):
    work = _workdir(tmp_path, media)
    argv = _argv(_command(".venv/bin/lipsync generate").replace("127.0.0.1:8001", triton.grpc_url))
    proc = subprocess.run(argv + ["--quiet", "--no-cache"], cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (work / "out" / "result.mp4").stat().st_size > 1000


def test_export_command_examples(tmp_path):
    save_checkpoint(random_state_dict(1), tmp_path / "wav2lip_gan.pth")
    for start in (".venv/bin/lipsync export --checkpoint", ".venv/bin/lipsync export --random-weights"):
        proc = subprocess.run(_argv(_command(start)), cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        report = (tmp_path / "out" / "model_repository" / "export.json").read_text()
        assert ("wav2lip_gan.pth" in report) == ("--checkpoint" in start)
        assert (tmp_path / "out" / "model_repository" / "wav2lip" / "config.pbtxt").is_file()


def test_serve_command_example(exported_repo, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model_repository").symlink_to(exported_repo)
    ports = Ports.free()
    line = _command(".venv/bin/lipsync serve")
    line = line.replace("8001", str(ports.grpc)).replace("8000", str(ports.http)).replace("8002", str(ports.metrics))
    proc = subprocess.Popen(_argv(line), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_ok(f"http://127.0.0.1:{ports.http}/v2/health/ready", proc, 300)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_perf_command_examples(exported_repo, tmp_path):
    """`perf models` and `perf e2e` as the README writes them, in their seconds-long --tiny mode, so
    the harness cannot rot. (Numbers come from the full runs in perf/BENCHMARKS.md, never from tests.)"""
    results = tmp_path / "perf" / "results"
    outputs = {}
    for start in (".venv/bin/lipsync perf models", ".venv/bin/lipsync perf e2e"):
        argv = _argv(_command(start)) + ["--tiny", "--model-repository", str(exported_repo)]
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[start] = proc.stdout

    models = json.loads((results / "models.json").read_text())
    for model in ("wav2lip", "face_detector"):
        r = models["models"][model]
        assert r["triton_c1_per_s"] > 0 and r["inprocess_per_s"] > 0 and r["overhead_ratio"] > 0
        assert (results / f"{model}_sweep.csv").read_text().startswith("Concurrency,Inferences/Second")
        assert (results / f"{model}_throughput_latency.png").read_bytes()[:4] == b"\x89PNG"
        if "avx512f" in models["machine"]["cpu_flags"]:  # the AVX2-only stand-in really ran oneDNN's AVX2 convolutions
            capped = models["runtimes"]["models"][model]
            kernels = capped["avx2_cap_convolution_kernels"]
            assert capped["openvino_f32_avx2_cap_per_s"] > 0 and kernels and all("avx2" in k for k in kernels), kernels
    rows = models["dynamic_batching"]["face_detector"]
    assert [r["concurrency"] for r in rows] == [1, 4] and all(r["ratio"] > 0 for r in rows)
    assert (results / "face_detector_dynamic_batching.png").exists()
    assert "| wav2lip |" in outputs[".venv/bin/lipsync perf models"]

    # perf compare against HEAD (a CI clone may hold no earlier commit): both sides run and are compared.
    argv = [a if a != "HEAD~1" else "HEAD" for a in _argv(_command(".venv/bin/lipsync perf compare"))]
    proc = subprocess.run(argv + ["--tiny", "--model-repository", str(exported_repo)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    compare = json.loads((results / "compare.json").read_text())
    for mode in ("cache_hit", "no_cache"):
        row = compare["rounds"][0]
        assert row[f"baseline_{mode}"]["frames_per_second"] > 0 and row[f"current_{mode}"]["frames_per_second"] > 0
        assert compare["summary"][mode]["ratio"] > 0
    assert "| cache_hit |" in proc.stdout

    e2e = json.loads((results / "e2e.json").read_text())
    runs = e2e["runs"]
    assert [(r["seconds_of_video"], r["presenter_cache"]) for r in runs] == [(1.0, False), (1.0, True), (2.0, False), (2.0, True)]
    assert all(r["cache_hit"] == r["presenter_cache"] for r in runs)
    assert all(r["frames_per_second"] > 0 and r["client_peak_rss_mb"] > 0 for r in runs)
    assert set(runs[0]["stages"]) == {"decode", "mel", "detect", "generate", "paste", "encode"}
    assert e2e["server_peak_rss_mb"] > 0 and e2e["client_rss_ratio"]["ratio"] > 0
    assert [r["minutes"] for r in e2e["lectures"]] == [0.05, 0.1] and e2e["lecture_rss_ratio"]["ratio"] > 0
    assert e2e["runtime_comparison"]["onnxruntime_per_s"] > 0 and e2e["runtime_comparison"]["ratio"] > 0
    assert e2e["detect_stride"]["every_frame_per_s"] > 0 and e2e["detect_stride"]["every_2nd_per_s"] > 0
    assert 12 <= e2e["lectures"][1]["frames"] <= 14  # 2 fps over the whole 6 s speech (+1 for the last window)


def _block_after(heading: str, lang: str) -> str:
    start = README.index(heading)
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    return match.group(1)


def test_make_service_and_the_curl_example(tmp_path, media):
    """`make service` from this checkout (export with random weights, embedded Triton, API, UI,
    worker), then the README's curl lines against it, then SIGTERM: everything stops."""
    from service_harness import free_port

    port = free_port()
    work = tmp_path  # no inputs placed: `make service` writes the ones the curl lines use
    argv = shlex.split(_command("make service")) + [f"OUT={work / 'out'}", f"DATA={work / 'data'}", f"PORT={port}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPSYNC_")}
    log = open(tmp_path / "service.log", "wb")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=0)
    try:
        _wait_until_ok(f"http://127.0.0.1:{port}/readyz", proc, 600)
        assert proc.poll() is None, (tmp_path / "service.log").read_text()[-3000:]
        script = _block_after("A job from the shell:", "bash").replace("7860", str(port))
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        from lipsync_triton.preprocessing.media_probe import probe_media

        info = probe_media(work / "out" / "service.mp4")
        assert info.has_video and info.has_audio and info.frames > 10
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # as a terminal's Ctrl-C or a service manager would
        proc.wait(timeout=120)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # make exits at once; the API stops its workers and Triton first
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    assert b"api_stopped" in (tmp_path / "service.log").read_bytes()


def test_batch_command_example(triton, media, tmp_path):
    work = _workdir(tmp_path, media)
    (work / "out" / "jobs.csv").write_text(_block_after("### Batch jobs without the service", "csv"))
    argv = _argv(_command(".venv/bin/lipsync batch").replace("127.0.0.1:8001", triton.grpc_url))
    proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (work / "out" / "batch").glob("*.mp4")) == ["goodbye.mp4", "welcome.mp4"]


def test_the_settings_table_lists_every_setting():
    from lipsync_triton.service.settings import Settings

    for name, field in Settings.model_fields.items():
        assert f"| `LIPSYNC_{name.upper()}` |" in README, f"README's settings table lacks LIPSYNC_{name.upper()}"
        assert field.description and field.description in README


def test_perf_service_example(triton, tmp_path):
    """The service load test as the README writes it, with 8 clients against a local-only service."""
    from service_harness import Service

    with Service(tmp_path / "data", triton.grpc_url, keys="", extra_env={"LIPSYNC_LOCAL_ONLY": "1"}) as svc:
        argv = _argv(_command(".venv/bin/lipsync perf service").replace("http://127.0.0.1:7860", svc.base)) + ["--clients", "8"]
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "perf" / "results" / "service_load.json").read_text())
    assert report["jobs_submitted"] == 8 and report["final_states"] == {"succeeded": 8}
    assert report["lost"] == report["duplicated"] == 0 and report["submit_ms_p99"] > 0


def test_webhook_verification_example():
    from lipsync_triton.service.webhooks import sign

    code = next(c for c, _ in _blocks("python") if "X-Lipsync-Signature" in c)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    verify, body = namespace["verify"], b'{"event": "job.finished"}'
    assert verify("secret", sign("secret", body), body)
    assert not verify("secret", sign("secret", body), body + b"x")
    assert not verify("other", sign("secret", body), body)
    assert not verify("secret", sign("secret", body, timestamp=int(time.time()) - 3600), body)


def test_make_sbom_lists_the_environment(tmp_path):
    argv = shlex.split(_command("make sbom")) + [f"OUT={tmp_path}"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    sbom = json.loads((tmp_path / "sbom-environment.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    versions = {c["name"].lower(): c.get("version") for c in sbom["components"]}
    for package in ("tritonclient", "openvino", "fastapi", "numpy"):
        assert versions.get(package), package
