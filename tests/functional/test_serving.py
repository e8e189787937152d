"""A real tritonserver serving the exported repository over gRPC."""
import re
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from lipsync_triton.client.triton_client import TritonPool
from lipsync_triton.errors import LipsyncError
from lipsync_triton.export.wav2lip_onnx import sample_inputs
from lipsync_triton.serving.server import Ports, TritonServer

from conftest import ROOT


def _infer(url, model, inputs, outputs):
    client = grpcclient.InferenceServerClient(url)
    tensors = []
    for name, array in inputs.items():
        t = grpcclient.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "UINT8")
        t.set_data_from_numpy(array)
        tensors.append(t)
    result = client.infer(model, tensors, outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
    return [result.as_numpy(o) for o in outputs]


def _stats(url, model):
    entry = grpcclient.InferenceServerClient(url).get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


def _served_runtime(model_dir):
    from lipsync_triton.export.triton_cpu_runner import cpu_session

    params = dict(re.findall(r'key: "(\w+)" value \{ string_value: "([^"]*)" \}', (model_dir / "config.pbtxt").read_text()))
    outputs = re.findall(r'output \{.*?\n  name: "(\w+)"', (model_dir / "config.pbtxt").read_text(), flags=re.S)
    return params, cpu_session(str(model_dir / "1" / "model.onnx"), params, str(model_dir), outputs)


def test_the_embedded_default_serves_openvino_at_the_cpus_precision(exported_repo, triton):
    import openvino as ov

    params, session = _served_runtime(exported_repo / "wav2lip")
    assert params["runtime"] == "openvino" and params["precision"] == "auto"
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert session.precision == ("bf16" if has_bf16 else "f32")
    # the compiled-model cache was filled at load, so the next start skips compilation
    assert any((exported_repo / "wav2lip" / "ov_cache").iterdir())


def test_wav2lip_over_grpc_equals_the_same_runtime_in_process(triton, exported_repo):
    mel, face = sample_inputs(20, seed=11)  # more than max_infer_batch (16): the runner runs it in slices
    (served,) = _infer(triton.grpc_url, "wav2lip", {"mel": mel, "face": face}, ["face_out"])
    (local,) = _served_runtime(exported_repo / "wav2lip")[1].run({"mel": mel, "face": face})
    assert served.shape == (20, 96, 96, 3) and served.dtype == np.uint8
    assert np.abs(served.astype(np.int16) - local.astype(np.int16)).max() <= 1
    # and the served precision stays within a grey level of ONNX Runtime fp32 on average
    session = ort.InferenceSession(str(exported_repo / "wav2lip" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (fp32,) = session.run(["face_out"], {"mel": mel, "face": face})
    assert np.abs(served.astype(np.int16) - fp32.astype(np.int16)).mean() <= 1.0


def test_face_detector_over_grpc_equals_the_same_runtime_in_process(triton, exported_repo):
    image = np.random.default_rng(3).integers(0, 256, (2, 384, 640, 3), dtype=np.uint8)
    scores, boxes = _infer(triton.grpc_url, "face_detector", {"image": image}, ["scores", "boxes"])
    local_scores, local_boxes = _served_runtime(exported_repo / "face_detector")[1].run({"image": image})
    assert np.abs(scores - local_scores).max() <= 1e-3
    assert np.abs(boxes - local_boxes).max() <= 1e-1


def settled_stats(url, model, expected_inferences, timeout=60.0):
    """Triton updates statistics after the responses are sent: poll until the count is reached."""
    deadline = time.monotonic() + timeout
    while True:
        stats = _stats(url, model)
        if stats[0] >= expected_inferences or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def test_dynamic_batching_merges_concurrent_requests(triton):
    before = settled_stats(triton.grpc_url, "wav2lip", 0)
    mel, face = sample_inputs(1, seed=2)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: _infer(triton.grpc_url, "wav2lip", {"mel": mel, "face": face}, ["face_out"]), range(32)))
    after = settled_stats(triton.grpc_url, "wav2lip", before[0] + 32)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 32
    assert executions < inferences, f"{executions} executions for {inferences} inferences: no batching"


def _compute_ns(url, model):
    entry = grpcclient.InferenceServerClient(url).get_inference_statistics(model, as_json=True)["model_stats"][0]
    stats = entry["inference_stats"]["compute_infer"]
    return int(stats.get("count", 0)), int(stats.get("ns", 0))


def test_the_first_request_after_ready_is_already_warm(exported_repo, tmp_path):
    """Warm-up runs before READY: the model's first execution is logged before Triton reports the
    model loaded (the exact check), and the first user request then costs about what later ones do
    (server-side compute time, within 4x: a coarse check, since a loaded 2-core machine gave 2.7x)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(exported_repo / "face_detector", repo / "face_detector")
    image = np.random.default_rng(5).integers(0, 256, (4, 384, 640, 3), dtype=np.uint8)
    log = tmp_path / "tritonserver.log"
    with TritonServer(repo, log_path=log) as server:
        url = server.grpc_url

        def timed_request():
            count, ns = _compute_ns(url, "face_detector")
            _infer(url, "face_detector", {"image": image}, ["scores"])
            deadline = time.monotonic() + 30
            while _compute_ns(url, "face_detector")[0] == count and time.monotonic() < deadline:
                time.sleep(0.05)
            return _compute_ns(url, "face_detector")[1] - ns

        first = timed_request()
        steady = sorted(timed_request() for _ in range(5))[2]
    text = log.read_text()
    warmed, loaded = text.find("face_detector: first execution"), text.find("successfully loaded 'face_detector'")
    assert 0 <= warmed < loaded, "the model's first execution was not the warm-up before READY"
    assert first <= 4.0 * steady, f"first request {first / 1e6:.1f} ms vs steady {steady / 1e6:.1f} ms"


def _broken_repo(exported_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(exported_repo, repo)
    (repo / "wav2lip" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    return repo


def test_serve_exits_nonzero_with_one_line_reason_when_a_model_fails(exported_repo, tmp_path):
    repo = _broken_repo(exported_repo, tmp_path)
    ports = Ports.free()
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "lipsync"), "serve", "--model-repository", str(repo),
         "--grpc-port", str(ports.grpc), "--http-port", str(ports.http), "--metrics-port", str(ports.metrics)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()
    assert len(last) == 1 and last[0].startswith("error: tritonserver exited") and "wav2lip" in last[0]


def test_serve_rejects_a_missing_repository(tmp_path):
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "lipsync"), "serve", "--model-repository", str(tmp_path / "none")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "model repository not found" in proc.stderr


def test_transient_unavailable_is_retried_until_the_server_is_up(exported_repo, tmp_path):
    """A request sent while the server is down succeeds once it comes (up) within the retry window."""
    repo = tmp_path / "only_wav2lip"
    repo.mkdir()
    shutil.copytree(exported_repo / "wav2lip", repo / "wav2lip")
    server = TritonServer(repo)
    pool = TritonPool(server.grpc_url, retry_seconds=120)
    mel, face = sample_inputs(1)
    starter = threading.Timer(1.0, server.start)
    starter.start()
    try:
        out = pool.infer("wav2lip", {"mel": mel, "face": face}, ["face_out"])
        assert out["face_out"].shape == (1, 96, 96, 3)
        # a server without the detector is refused up front, naming what is missing
        with pytest.raises(LipsyncError, match="no ready model 'face_detector'"):
            TritonPool(server.grpc_url).check_ready()
    finally:
        starter.join()
        server.stop()


def test_unreachable_server_is_named():
    with pytest.raises(LipsyncError, match=r"cannot reach Triton at 127\.0\.0\.1:1 .*lipsync serve"):
        TritonPool("127.0.0.1:1", retry_seconds=1).check_ready()
