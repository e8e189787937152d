"""Export: numerical self-checks, the face detector, the repository layout and its configs."""
import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lipsync_triton.errors import LipsyncError
from lipsync_triton.export.checkpoint import random_wav2lip, save_checkpoint, random_state_dict
from lipsync_triton.export.face_detector import export_face_detector
from lipsync_triton.export.model_config import PROFILES, committed_configs, model_configs
from lipsync_triton.export.repository import ExportOptions, export_repository
from lipsync_triton.export.wav2lip_onnx import FP32_TOLERANCE, check_parity, convert_fp16, export_wav2lip_onnx
from lipsync_triton.preprocessing.faces import Letterbox, faces_from_candidates
from lipsync_triton.samples import astronaut_bgr

from conftest import ROOT


@pytest.fixture(scope="module")
def net_and_onnx(tmp_path_factory):
    net = random_wav2lip(5)
    path = export_wav2lip_onnx(net, tmp_path_factory.mktemp("onnx") / "wav2lip.onnx")
    return net, path


def test_onnx_has_dynamic_batch_and_serving_io(net_and_onnx):
    _, path = net_and_onnx
    model = onnx.load(str(path))
    io = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    assert set(io) == {"mel", "face", "face_out"}
    assert io["face"].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert io["face_out"].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert io["mel"].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        out = session.run(None, {"mel": np.zeros((batch, 80, 16), np.float32), "face": np.zeros((batch, 96, 96, 3), np.uint8)})[0]
        assert out.shape == (batch, 96, 96, 3)


def test_fp32_parity_within_tolerance(net_and_onnx):
    net, path = net_and_onnx
    report = check_parity(net, path)
    assert report.max_abs_diff <= FP32_TOLERANCE
    assert report.max_uint8_diff <= 1


def test_parity_check_catches_a_corrupted_weight(net_and_onnx):
    net, path = net_and_onnx
    corrupted = random_wav2lip(5)
    with torch.no_grad():
        corrupted.output_block[1].weight.mul_(-1.0)
    with pytest.raises(LipsyncError, match="parity check failed"):
        check_parity(corrupted, path)


def test_fp16_onnx_checked_with_its_own_tolerance(net_and_onnx, tmp_path):
    net, path = net_and_onnx
    half = convert_fp16(path, tmp_path / "fp16.onnx")
    report = check_parity(net, half, "fp16")
    assert report.tolerance > FP32_TOLERANCE and report.max_abs_diff <= report.tolerance
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(half)).graph.initializer)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    path = export_face_detector(tmp_path_factory.mktemp("det") / "det.onnx")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _detect(session, image):
    letterbox = Letterbox(384, 640)
    canvas, scale = letterbox.apply(image)
    scores, boxes = session.run(["scores", "boxes"], {"image": canvas[None]})
    return faces_from_candidates(scores[0], boxes[0], scale)


def test_detector_finds_the_astronaut_face(detector):
    faces = _detect(detector, astronaut_bgr())
    assert len(faces) == 1
    x1, y1, x2, y2, score = faces[0]
    assert score > 0.7
    # The face of the 512x512 photo lies around x 180-270, y 60-180.
    assert 150 < (x1 + x2) / 2 < 260 and 80 < (y1 + y2) / 2 < 160 and 60 < x2 - x1 < 140


def test_detector_finds_no_face_in_noise(detector):
    noise = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    assert len(_detect(detector, noise)) == 0


def test_detector_has_symbolic_batch_and_compact_outputs(detector):
    batch = np.zeros((3, 384, 640, 3), np.uint8)
    scores, boxes = detector.run(["scores", "boxes"], {"image": batch})
    assert scores.shape == (3, 32) and boxes.shape == (3, 32, 4)
    # another serving resolution works from the same graph (multiples of 32)
    scores, _ = detector.run(["scores", "boxes"], {"image": np.zeros((1, 736, 1280, 3), np.uint8)})
    assert scores.shape == (1, 32)


def test_repository_layout_and_report(exported_repo):
    for model in ("wav2lip", "face_detector"):
        assert (exported_repo / model / "config.pbtxt").is_file()
        assert (exported_repo / model / "1" / "model.onnx").is_file()
        assert (exported_repo / model / "1" / "model.py").is_file()
    report = json.loads((exported_repo / "export.json").read_text())
    assert report["weights"].startswith("RANDOM")
    assert report["parity"][0]["max_abs_diff"] <= FP32_TOLERANCE
    assert report["detector_check"]["astronaut"]["faces"] == 1 and report["detector_check"]["noise"]["faces"] == 0


def test_detector_self_check_fails_when_it_cannot_find_the_face(tmp_path):
    from lipsync_triton.export.face_detector import check_detector

    path = export_face_detector(tmp_path / "det.onnx")
    assert check_detector(path, (384, 640))["astronaut"]["best_score"] > 0.7
    with pytest.raises(LipsyncError, match="self-check failed"):
        check_detector(path, (32, 32))  # far too small to see a face


def test_committed_configs_match_the_generator():
    for rel, text in committed_configs().items():
        committed = ROOT / "model_repository" / rel
        assert committed.is_file(), f"{rel} missing: python -m lipsync_triton.export.model_config model_repository"
        assert committed.read_text() == text, f"{rel} drifted from the generator"


def _client_contract(text: str) -> list[str]:
    keep = ("name:", "data_type:", "dims:", "max_batch_size:")
    return [line.strip() for line in text.splitlines()
            if line.strip().startswith(keep) and "warmup" not in line and "tensorrt" not in line]


def test_profiles_share_names_tensors_shapes_and_batch_sizes():
    cpu = {c.model.name: c.to_pbtxt() for c in model_configs("cpu")}
    for profile in PROFILES:
        other = {c.model.name: c.to_pbtxt() for c in model_configs(profile)}
        assert other.keys() == cpu.keys()
        for name in cpu:
            assert _client_contract(other[name]) == _client_contract(cpu[name]), (profile, name)
    for cfg in model_configs("cpu"):
        text = cfg.to_pbtxt()
        assert "dynamic_batching" in text and "model_warmup" in text and "instance_group" in text
    gpu = {c.model.name: c.to_pbtxt() for c in model_configs("gpu")}
    assert 'backend: "onnxruntime"' in gpu["wav2lip"] and 'name: "tensorrt"' in gpu["wav2lip"]


def test_gpu_accelerator_builds_one_engine_for_every_batch_and_caches_it_in_the_engine_volume():
    """Without explicit profile shapes ONNX Runtime's TensorRT accelerator builds an engine per new
    batch size; with its cache in /tmp every pod start rebuilds them all."""
    import re

    from lipsync_triton.export.model_config import ENGINE_CACHE_DIR

    for cfg in model_configs("gpu", detector_size=(256, 320)):
        text = cfg.to_pbtxt()
        params = dict(re.findall(r'parameters \{ key: "(\w+)" value: "([^"]*)" \}', text))
        m = cfg.model
        assert params["trt_engine_cache_path"] == f"{ENGINE_CACHE_DIR}/onnxruntime-trt/{m.name}"
        assert params["trt_timing_cache_path"].startswith(ENGINE_CACHE_DIR + "/")
        dims = {"wav2lip": ["mel:{}x80x16", "face:{}x96x96x3"], "face_detector": ["image:{}x256x320x3"]}[m.name]
        for key, batch in (("min", 1), ("opt", m.max_batch_size // 2), ("max", m.max_batch_size)):
            assert params[f"trt_profile_{key}_shapes"] == ",".join(d.format(batch) for d in dims), (m.name, key)
    # the GPU image and the chart mount their engine volume at the same path
    assert f"ENGINE_CACHE={ENGINE_CACHE_DIR}" in (ROOT / "docker" / "Dockerfile.triton-gpu").read_text()
    assert f"mountPath: {ENGINE_CACHE_DIR}}}" in (ROOT / "deploy" / "helm" / "lipsync" / "templates" / "triton.yaml").read_text()


def test_gpu_export_without_tensorrt_falls_back_to_the_accelerator(tmp_path):
    report = export_repository(ExportOptions(out=tmp_path / "gpu", profile="gpu", random_weights=True, fp16=True))
    assert "TensorRT accelerator" in report.tensorrt or "TensorRT found" in report.tensorrt
    assert [p["precision"] for p in report.parity] == ["fp32", "fp16"]
    text = (tmp_path / "gpu" / "wav2lip" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in text
    assert not (tmp_path / "gpu" / "wav2lip" / "1" / "model.py").exists()
    if "TensorRT found" not in report.tensorrt:
        with pytest.raises(LipsyncError, match="TensorRT is not available"):
            export_repository(ExportOptions(out=tmp_path / "trt", profile="gpu", random_weights=True, tensorrt=True))
        assert not (tmp_path / "trt").exists()


def _lipsync(*args):
    return subprocess.run([str(ROOT / ".venv" / "bin" / "lipsync"), *map(str, args)], capture_output=True, text=True)


def test_cli_requires_explicit_weights(tmp_path):
    proc = _lipsync("export", "--out", tmp_path / "repo")
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: no weights") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "repo").exists()


def test_cli_bad_checkpoint_leaves_nothing_half_written(tmp_path):
    state = random_state_dict(0)
    del state["output_block.1.weight"]
    save_checkpoint(state, tmp_path / "broken.pth")
    proc = _lipsync("export", "--checkpoint", tmp_path / "broken.pth", "--out", tmp_path / "repo")
    assert proc.returncode != 0
    assert "output_block.1.weight" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "repo").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken.pth"]


def test_cli_random_weights_say_so_loudly(tmp_path):
    proc = _lipsync("export", "--random-weights", "--seed", "7", "--out", tmp_path / "repo")
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM" in proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1])["weights"] == "RANDOM (seed 7)"


def test_cpu_export_checks_the_serving_runtime_on_real_inputs(exported_repo):
    from lipsync_triton.export.cpu_parity import UINT8_TOLERANCE

    cpu = json.loads((exported_repo / "export.json").read_text())["cpu_runtime"]
    assert cpu["runtime"] == "openvino" and cpu["precision"] in ("bf16", "f32")
    max_allowed, mean_allowed = UINT8_TOLERANCE[cpu["precision"]]
    assert cpu["max_uint8_diff"] <= max_allowed and cpu["mean_uint8_diff"] <= mean_allowed


@pytest.mark.parametrize("runtime, precision", [("openvino", "f32"), ("onnxruntime", "auto")])
def test_cpu_runtime_parity_gate_catches_a_graph_that_differs(net_and_onnx, runtime, precision):
    from lipsync_triton.export.cpu_parity import check_wav2lip_cpu

    net, path = net_and_onnx
    report = check_wav2lip_cpu(net, path, runtime, precision)
    assert report.precision == "f32" and report.max_uint8_diff <= 2
    corrupted = random_wav2lip(5)
    with torch.no_grad():
        corrupted.output_block[1].bias.add_(0.5)
    with pytest.raises(LipsyncError, match=f"{runtime} f32 parity check failed"):
        check_wav2lip_cpu(corrupted, path, runtime, precision)


def test_onnxruntime_stays_selectable(tmp_path):
    out = tmp_path / "repo"
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "lipsync"), "export", "--random-weights", "--runtime", "onnxruntime",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert 'key: "runtime" value { string_value: "onnxruntime" }' in (out / "wav2lip" / "config.pbtxt").read_text()
    assert json.loads((out / "export.json").read_text())["cpu_runtime"]["runtime"] == "onnxruntime"


def test_every_generated_config_parses_as_a_triton_model_config():
    """Triton's own ModelConfig proto (tritonclient ships it): a typo in a profile that cannot run
    here (GPU, the official container's OpenVINO backend) still fails."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for rel, text in committed_configs().items():
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
        assert config.name == rel.split("/")[1] and config.max_batch_size > 0 and config.HasField("dynamic_batching"), rel
        batching = config.dynamic_batching
        if config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU:
            # preferred sizes would dispatch each of the client's 16-frame requests at once; the queue is bounded
            assert not batching.preferred_batch_size and batching.default_queue_policy.max_queue_size > 0, rel
        else:
            assert batching.preferred_batch_size, rel
