"""Processes behave: signals reach tritonserver, nothing outlives its parent, a failing or
interrupted job stops its in-flight requests at once and never touches the caller's cancel event."""
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import psutil
import pytest
import tritonclient.grpc as grpcclient

from lipsync_triton.client.generate import LipSyncClient
from lipsync_triton.client.in_flight import InFlight, JobCancel
from lipsync_triton.client.triton_client import Cancelled
from lipsync_triton.errors import LipsyncError
from lipsync_triton.samples import write_speech
from lipsync_triton.serving.server import Ports, TritonServer

from conftest import ROOT

LIPSYNC = str(ROOT / ".venv" / "bin" / "lipsync")
BOX = ("--box", "40", "200", "200", "360")


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _ready(ports):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.http}/v2/health/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _port_free(port):
    """A new server could listen there (SO_REUSEADDR, as servers set: closed connections may linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            return True
        except OSError:
            return False


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _start_serve(repo):
    ports = Ports.free()
    proc = subprocess.Popen([LIPSYNC, "serve", "--model-repository", str(repo), "--grpc-port", str(ports.grpc),
                             "--http-port", str(ports.http), "--metrics-port", str(ports.metrics)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait(lambda: _ready(ports) or proc.poll() is not None, 300, "lipsync serve to be ready")
    assert proc.poll() is None, proc.stderr.read()
    (server,) = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.name().startswith("tritonserver")]
    return proc, server.pid, ports


@pytest.fixture(scope="module")
def wav2lip_repo(exported_repo, tmp_path_factory):
    repo = tmp_path_factory.mktemp("only_wav2lip") / "repo"
    repo.mkdir()
    shutil.copytree(exported_repo / "wav2lip", repo / "wav2lip")
    return repo


def test_serve_listens_on_loopback_unless_told_otherwise(wav2lip_repo):
    """Triton's ports take no keys: `lipsync serve` binds 127.0.0.1 by default (`--address` to change)."""
    proc, server_pid, ports = _start_serve(wav2lip_repo)
    try:
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(server_pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN}
        assert {port for _, port in listening} >= {ports.grpc, ports.http, ports.metrics}, listening
        assert {ip.removeprefix("::ffff:") for ip, _ in listening} == {"127.0.0.1"}, listening
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_forwards_stop_signals_and_leaves_no_server_behind(wav2lip_repo, sig):
    proc, server_pid, ports = _start_serve(wav2lip_repo)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 0
    assert _gone(server_pid)
    _wait(lambda: _port_free(ports.grpc) and _port_free(ports.http), 30, "the ports to be released")


def test_a_killed_serve_takes_its_server_with_it(wav2lip_repo):
    proc, server_pid, _ = _start_serve(wav2lip_repo)
    proc.kill()  # SIGKILL: nothing can be forwarded; the kernel signals the child (PR_SET_PDEATHSIG)
    proc.wait()
    _wait(lambda: _gone(server_pid), 120, "tritonserver to exit after its parent died")


@pytest.fixture(scope="module")
def lone_server(wav2lip_repo):
    server = TritonServer(wav2lip_repo).start()
    yield server
    os.kill(server.pid(), signal.SIGCONT)
    server.stop()


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory):
    return write_speech(tmp_path_factory.mktemp("speech") / "long.wav", "This speech goes on for a while. " * 6)


def _wav2lip_count(server):
    stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics("wav2lip", as_json=True)
    return int(stats["model_stats"][0].get("inference_count", 0))


def _encoding(proc):
    try:
        return any("libx264" in " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True))
    except psutil.Error:
        return False


def _frozen(server):
    """Stop the server process (SIGSTOP): requests hang until their 120 s client timeout."""
    class Frozen:
        def __enter__(self):
            os.kill(server.pid(), signal.SIGSTOP)

        def __exit__(self, *exc):
            os.kill(server.pid(), signal.SIGCONT)
            # Triton still runs the requests that were queued when it stopped: let it drain.
            counts = [_wav2lip_count(server)]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(1.0)
                counts.append(_wav2lip_count(server))
                if counts[-1] == counts[-2]:
                    break
    return Frozen()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_a_job_with_requests_hanging_in_flight(lone_server, media, long_speech, tmp_path, sig):
    out = tmp_path / "out" / "result.mp4"
    before = _wav2lip_count(lone_server)
    proc = subprocess.Popen([LIPSYNC, "generate", "--face", str(media["clip"]), "--audio", str(long_speech), "--outfile", str(out),
                             "--url", lone_server.grpc_url, "--quiet", *BOX], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Generating = its encoder is running (so its signal handling is set up) and the server counts its requests.
        _wait(lambda: proc.poll() is not None or (_encoding(proc) and _wav2lip_count(lone_server) > before), 120, "generation to start")
        assert proc.poll() is None, proc.stderr.read()
        with _frozen(lone_server):
            time.sleep(0.5)  # requests are now stuck in flight
            started = time.monotonic()
            proc.send_signal(sig)
            code = proc.wait(timeout=60)
            stopped_after = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert code == 128 + sig and err.strip() == f"error: interrupted by {sig.name}; no output was written", err  # 130 SIGINT, 143 SIGTERM
    assert stopped_after < 20, f"took {stopped_after:.1f}s: in-flight requests were waited for"
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("moment", ["detecting", "generating"])
def test_ctrl_c_in_a_terminal_is_reported_as_an_interrupt(triton, media, long_speech, tmp_path, moment):
    """A terminal's Ctrl-C is SIGINT to the whole foreground process group, ffmpeg children included:
    they have a group of their own, so the job stops them itself and says it was interrupted, never
    that the user's file is truncated or the encoder failed."""
    out = tmp_path / "out" / "result.mp4"
    proc = subprocess.Popen([LIPSYNC, "generate", "--face", str(media["clip"]), "--audio", str(long_speech), "--outfile", str(out),
                             "--url", triton.grpc_url, "--quiet", "--no-cache", *(BOX if moment == "generating" else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        def children():
            try:
                return [c for c in psutil.Process(proc.pid).children(recursive=True) if c.name() in ("ffmpeg", "ffprobe")]
            except psutil.Error:
                return []
        _wait(lambda: proc.poll() is not None or len(children()) >= (2 if moment == "generating" else 1), 120, "ffmpeg to run")
        assert proc.poll() is None, proc.stderr.read()
        assert all(os.getpgid(c.pid) != os.getpgid(proc.pid) for c in children() if c.is_running())
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert code == 130 and err.strip() == "error: interrupted by SIGINT; no output was written", err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_cancel_reaches_requests_in_flight(lone_server, media, long_speech, tmp_path):
    cancel = threading.Event()
    frozen = _frozen(lone_server)
    timing = {}

    def progress(done, total):
        if "frozen" not in timing:
            frozen.__enter__()
            timing["frozen"] = True
            threading.Timer(0.5, lambda: (timing.setdefault("cancel", time.monotonic()), cancel.set())).start()

    try:
        with pytest.raises(Cancelled):
            LipSyncClient([lone_server.grpc_url]).generate(media["clip"], long_speech, tmp_path / "x.mp4", progress=progress,
                                                           cancel=cancel, box=(40, 200, 200, 360))
        assert time.monotonic() - timing["cancel"] < 20
    finally:
        if "frozen" in timing:
            frozen.__exit__()
    assert list(tmp_path.iterdir()) == []


def test_an_internal_failure_stops_the_job_but_not_the_callers_cancel_event(lone_server, media, long_speech, tmp_path):
    cancel = threading.Event()
    frozen = _frozen(lone_server)
    state = {}

    def progress(done, total):
        if not state:
            frozen.__enter__()
            state["frozen"] = time.monotonic()

    try:
        with pytest.raises(LipsyncError, match="inference on wav2lip .* failed") as info:
            LipSyncClient([lone_server.grpc_url]).generate(media["clip"], long_speech, tmp_path / "x.mp4", progress=progress,
                                                           cancel=cancel, box=(40, 200, 200, 360), retry_seconds=1.0,
                                                           request_timeout=2.0)
        assert not isinstance(info.value, Cancelled)
    finally:
        if state:
            frozen.__exit__()
    assert not cancel.is_set(), "an internal failure must not set the caller's shared cancel event"
    assert list(tmp_path.iterdir()) == []


def test_in_flight_stops_running_work_on_a_failure_and_keeps_order():
    caller = threading.Event()
    cancel = JobCancel(caller)
    finished = []

    def work(i):
        if i == 3:
            raise ValueError("boom")
        if i > 3:
            cancel.wait(60)  # a slow request: returns as soon as the job is cancelled
        finished.append(i)
        return i * 10

    seen = []
    started = time.monotonic()
    with pytest.raises(ValueError):
        with InFlight(4, cancel, "test") as flight:
            for context, result in flight.map(work, (((i,), i) for i in range(8))):
                seen.append((context, result))
    assert time.monotonic() - started < 10
    assert seen == [(0, 0), (1, 10), (2, 20)] and cancel.is_set() and not caller.is_set()


def _stubs_in_group(pgid: int) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "triton_python_backend_stub" in " ".join(proc.info["cmdline"] or []) and os.getpgid(proc.pid) == pgid:
                found.append(proc.pid)
        except (psutil.Error, ProcessLookupError):
            pass
    return found


def test_a_tritonserver_killed_alone_leaves_no_backend_stub_behind(wav2lip_repo):
    """The OOM killer takes tritonserver only: its Python-backend stubs would live on holding a
    model's memory each; the manager sweeps its process group."""
    server = TritonServer(wav2lip_repo).start()
    try:
        pgid = server.proc.pid
        assert _stubs_in_group(pgid)  # the backend runs the model in stub processes
        server.proc.kill()  # tritonserver alone, as the OOM killer does
        _wait(lambda: not _stubs_in_group(pgid), 60, "the backend stubs to be swept")
    finally:
        server.stop()
