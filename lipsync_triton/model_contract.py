"""What the client and the served models agree on, declared once and importing nothing: model
names, tensor names, types and shapes, and the config parameters `lipsync export` writes.

export/model_config.py builds every Triton config from these contracts (adding batching and
profiles); the client (generate, live, face tracking, readiness) names models and tensors only
through them, so a renamed tensor is one edit and a client that disagrees cannot be written."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # Triton TYPE_* name
    dims: tuple[int, ...]  # without the batch axis
    doc: str = ""


@dataclass(frozen=True)
class ModelContract:
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    doc: str = ""

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def tensor(self, name: str) -> Tensor:
        return next(t for t in (*self.inputs, *self.outputs) if t.name == name)


N_MELS, MEL_STEPS = 80, 16  # one window: 16 mel frames = 0.2 s
FACE_SIZE = 96
DETECTOR_TOP_K = 32
DEFAULT_DETECTOR_SIZE = (384, 640)  # H, W: a 720p frame scaled by 0.5 and padded to a multiple of 32

WAV2LIP = ModelContract(
    name="wav2lip",
    doc="Wav2Lip generator: one mel window and one face crop per frame -> generated face crop",
    inputs=(
        Tensor("mel", "TYPE_FP32", (N_MELS, MEL_STEPS), "normalised log-mel window (16 frames = 0.2 s), range [-4, 4]"),
        Tensor("face", "TYPE_UINT8", (FACE_SIZE, FACE_SIZE, 3), "BGR face crop, HWC, 0..255; the graph masks the lower half"),
    ),
    outputs=(Tensor("face_out", "TYPE_UINT8", (FACE_SIZE, FACE_SIZE, 3), "generated BGR face crop, HWC, 0..255"),),
)

FACE_DETECTOR = ModelContract(
    name="face_detector",
    doc="CenterFace with in-graph peak extraction: image -> top-K candidate boxes (client applies threshold + NMS)",
    inputs=(Tensor("image", "TYPE_UINT8", (*DEFAULT_DETECTOR_SIZE, 3), "BGR image, HWC, 0..255, letterboxed"),),
    outputs=(
        Tensor("scores", "TYPE_FP32", (DETECTOR_TOP_K,), "face probability of each candidate, descending"),
        Tensor("boxes", "TYPE_FP32", (DETECTOR_TOP_K, 4), "x1, y1, x2, y2 in input-image pixels"),
    ),
)

CONTRACTS: tuple[ModelContract, ...] = (WAV2LIP, FACE_DETECTOR)

# Config parameters written by `lipsync export`, read by clients:
WEIGHTS_PARAMETER = "weights"  # the served Wav2Lip weights: "random" or "checkpoint sha256:<16 hex>"
RANDOM_WEIGHTS = "random"
MODEL_SHA256_PARAMETER = "model_sha256"  # the exported file's content hash: a model's identity


def models_needed(fixed_box: bool) -> tuple[str, ...]:
    """The models a job needs: a fixed face box skips detection."""
    return (WAV2LIP.name,) if fixed_box else (WAV2LIP.name, FACE_DETECTOR.name)
