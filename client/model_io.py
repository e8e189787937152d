"""The served models' requests and results, typed: what a pipeline sends to and reads from each
model, with names from lipsync_triton/model_contract.py (`TritonPool.infer(*request)`)."""
from __future__ import annotations

import numpy as np

from lipsync_triton.model_contract import FACE_DETECTOR, WAV2LIP

Request = tuple[str, dict[str, np.ndarray], list[str]]
_MEL, _FACE = (t.name for t in WAV2LIP.inputs)
_FACE_OUT = WAV2LIP.outputs[0].name
_IMAGE = FACE_DETECTOR.inputs[0].name
_SCORES, _BOXES = FACE_DETECTOR.output_names


def wav2lip_request(mels: np.ndarray, faces: np.ndarray) -> Request:
    """mels float32 [N, 80, 16], faces uint8 [N, 96, 96, 3] (BGR) -> one Wav2Lip request."""
    return WAV2LIP.name, {_MEL: mels, _FACE: faces}, [_FACE_OUT]


def wav2lip_faces(out: dict[str, np.ndarray]) -> np.ndarray:
    """The generated face crops, uint8 [N, 96, 96, 3]."""
    return out[_FACE_OUT]


def detector_request(images: np.ndarray) -> Request:
    """Letterboxed BGR images uint8 [N, H, W, 3] -> one face-detector request."""
    return FACE_DETECTOR.name, {_IMAGE: images}, FACE_DETECTOR.output_names


def detector_candidates(out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, K], boxes [N, K, 4]) of each image's top-K candidates."""
    return out[_SCORES], out[_BOXES]
