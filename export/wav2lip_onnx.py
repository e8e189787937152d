"""Wav2Lip -> ONNX (dynamic batch, uint8 serving I/O) with a numerical self-check."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from lipsync_triton.errors import LipsyncError
from lipsync_triton.model_contract import WAV2LIP
from .wav2lip_model import Wav2Lip, Wav2LipServing

FP32_TOLERANCE = 1e-4  # max |torch - onnxruntime| on the [0,1] sigmoid output
FP16_TOLERANCE = 1e-2  # half precision keeps ~3 decimal digits: < 3 grey levels
OPSET = 17


@dataclass
class ParityReport:
    precision: str
    max_abs_diff: float  # on the [0,1] model output
    max_uint8_diff: int  # on the served uint8 output
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def sample_inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Realistic-range inputs: mel in [-4, 4] and a uint8 face crop."""
    rng = np.random.default_rng(seed)
    mel = np.clip(rng.normal(-1.0, 1.5, (batch, 80, 16)), -4, 4).astype(np.float32)
    face = rng.integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8)
    return mel, face


def export_wav2lip_onnx(net: Wav2Lip, path: str | Path) -> Path:
    """Export the serving graph with a symbolic batch axis."""
    path = Path(path)
    serving = Wav2LipServing(net.eval()).eval()
    mel, face = (torch.from_numpy(a) for a in sample_inputs(2))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            serving, (mel, face), str(path),
            input_names=[t.name for t in WAV2LIP.inputs], output_names=WAV2LIP.output_names,
            dynamic_axes={"mel": {0: "batch"}, "face": {0: "batch"}, "face_out": {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path


def _with_sigmoid_output(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """A copy of the graph that also outputs the float [0,1] prediction (the Sigmoid)."""
    sigmoids = [n for n in model.graph.node if n.op_type == "Sigmoid"]
    if len(sigmoids) != 1:
        raise LipsyncError(f"expected one Sigmoid in the Wav2Lip graph, found {len(sigmoids)}; re-run the export")
    name = sigmoids[0].output[0]
    # The Sigmoid runs in float16 inside an fp16 graph: declare the probe output's real type.
    elem = onnx.TensorProto.FLOAT
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT16:
            elem = onnx.TensorProto.FLOAT16
            break
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return probe, name


def check_parity(net: Wav2Lip, onnx_path: str | Path, precision: str = "fp32", batch: int = 4, seed: int = 0) -> ParityReport:
    """Run PyTorch and ONNX Runtime on the same inputs; raise if they differ beyond tolerance."""
    mel, face = sample_inputs(batch, seed)
    serving = Wav2LipServing(net.eval()).eval()
    with torch.no_grad():
        mel_t, face_t = torch.from_numpy(mel), torch.from_numpy(face)
        ref_uint8 = serving(mel_t, face_t).numpy()
        ref = serving.net(*serving.network_inputs(mel_t, face_t)).numpy()
    probe, sigmoid_name = _with_sigmoid_output(onnx.load(str(onnx_path)))
    options = ort.SessionOptions()
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    got_uint8, got = session.run(["face_out", sigmoid_name], {"mel": mel, "face": face})
    tolerance = FP32_TOLERANCE if precision == "fp32" else FP16_TOLERANCE
    report = ParityReport(
        precision=precision,
        max_abs_diff=float(np.abs(got.astype(np.float32).reshape(ref.shape) - ref).max()),
        max_uint8_diff=int(np.abs(got_uint8.astype(np.int16) - ref_uint8.astype(np.int16)).max()),
        tolerance=tolerance,
    )
    if not report.ok:
        raise LipsyncError(
            f"ONNX parity check failed for {Path(onnx_path).name} ({precision}): max abs diff "
            f"{report.max_abs_diff:.3g} > {tolerance:g}; the exported graph does not reproduce the checkpoint"
        )
    return report


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """FP16 weights and compute for GPUs; uint8/float32 I/O kept so clients do not change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, disable_shape_infer=False)
    onnx.save(model, str(dst))
    return Path(dst)
