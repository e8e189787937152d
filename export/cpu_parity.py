"""The CPU runtime that will serve (OpenVINO at the chosen precision, or ONNX Runtime) checked
against PyTorch fp32 on REAL inputs: face crops of scikit-image's astronaut photo and mel windows
of espeak-ng speech. Lower precision is judged on the served uint8 output, where it shows."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipsync_triton.errors import LipsyncError
from lipsync_triton.model_contract import FACE_DETECTOR, WAV2LIP
from .triton_cpu_runner import cpu_session
from .wav2lip_model import Wav2Lip, Wav2LipServing

# Served uint8 output vs PyTorch fp32: (max, mean) grey-level differences allowed per precision.
# bf16 keeps 8 bits of mantissa (~2-3 significant digits), so single pixels may move a few levels;
# the mean must stay well under one level. f32 may differ by rounding only.
UINT8_TOLERANCE = {"f32": (2, 0.05), "bf16": (24, 1.0)}
ASTRONAUT_FACE = (170, 30, 330, 230)  # x1, y1, x2, y2 in the 512x512 photo


@dataclass
class CpuParity:
    runtime: str
    precision: str
    max_uint8_diff: int
    mean_uint8_diff: float
    tolerance: tuple[int, float]


def real_inputs(batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Mel windows of real speech and face crops of a real face (slightly shifted boxes)."""
    import cv2

    from lipsync_triton.preprocessing.audio import load_mel
    from lipsync_triton.preprocessing.mel import MEL_WINDOW, mel_window_starts
    from lipsync_triton.samples import astronaut_bgr, write_speech

    with tempfile.TemporaryDirectory() as tmp:
        mel = load_mel(write_speech(Path(tmp) / "speech.wav", "Checking the served model against the checkpoint."))
    starts = mel_window_starts(mel.shape[1], 25.0)
    picks = np.linspace(0, len(starts) - 1, batch).astype(int)
    mels = np.stack([mel[:, starts[i]:starts[i] + MEL_WINDOW] for i in picks]).astype(np.float32)
    photo = astronaut_bgr()
    x1, y1, x2, y2 = ASTRONAUT_FACE
    faces = np.stack([cv2.resize(photo[y1 + d:y2 + d, x1 - d:x2 - d], (96, 96)) for d in range(-batch // 2, batch - batch // 2)])
    return mels, faces


def check_wav2lip_cpu(net: Wav2Lip, onnx_path: str | Path, runtime: str, precision: str) -> CpuParity:
    """Raise unless the served runtime reproduces PyTorch fp32 within the precision's tolerance."""
    mel, face = real_inputs()
    with torch.no_grad():
        reference = Wav2LipServing(net.eval()).eval()(torch.from_numpy(mel), torch.from_numpy(face)).numpy()
    session = cpu_session(str(onnx_path), {"runtime": runtime, "precision": precision, "threads": "2"}, None, WAV2LIP.output_names)
    (served,) = session.run({"mel": mel, "face": face})
    diff = np.abs(served.astype(np.int16) - reference.astype(np.int16))
    report = CpuParity(runtime, session.precision, int(diff.max()), round(float(diff.mean()), 4), UINT8_TOLERANCE[session.precision])
    max_allowed, mean_allowed = report.tolerance
    if report.max_uint8_diff > max_allowed or report.mean_uint8_diff > mean_allowed:
        raise LipsyncError(
            f"{runtime} {report.precision} parity check failed for {Path(onnx_path).name}: uint8 output differs from PyTorch "
            f"fp32 by max {report.max_uint8_diff} / mean {report.mean_uint8_diff} (allowed {max_allowed} / {mean_allowed}); "
            "export with --precision f32 or --runtime onnxruntime")
    return report


def detector_session(onnx_path: str | Path, runtime: str, precision: str):
    """The served detector as a callable feed -> [scores, boxes] (for the export's self-check)."""
    session = cpu_session(str(onnx_path), {"runtime": runtime, "precision": precision, "threads": "2"}, None, FACE_DETECTOR.output_names)
    return session.run
