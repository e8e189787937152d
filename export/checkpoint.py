"""Load a user's Wav2Lip checkpoint (official format) or build seeded stand-in weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lipsync_triton.errors import LipsyncError
from .wav2lip_model import Wav2Lip


def _strip_module_prefix(state: dict) -> dict:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def describe_mismatch(model: torch.nn.Module, state: dict) -> str | None:
    """Name the first missing/unexpected keys and shape mismatches, or None when it fits."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (first: {'; '.join(wrong[:3])})")
    return "; ".join(problems) or None


def load_wav2lip(path: str | Path) -> Wav2Lip:
    """Load `wav2lip.pth`/`wav2lip_gan.pth` strictly; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise LipsyncError(f"checkpoint not found: {path} (pass the path of wav2lip.pth or wav2lip_gan.pth)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage makes the unpickler raise anything: IndexError, UnpicklingError, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LipsyncError(
            f"{path} is not a loadable PyTorch checkpoint ({first_line[:160]}); pass the original wav2lip .pth file"
        ) from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LipsyncError(f"{path} holds no state_dict of tensors; pass the original wav2lip .pth file")
    state = _strip_module_prefix(state)
    model = Wav2Lip()
    problem = describe_mismatch(model, state)
    if problem:
        raise LipsyncError(f"{path} is not a Wav2Lip checkpoint: {problem}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic stand-in weights in the official layout (numpy RNG: stable across torch versions).

    He-scaled convolutions and near-identity batch norms keep activations in range so the
    stand-in model produces varied (if meaningless) faces, exercising every code path.
    """
    rng = np.random.default_rng(seed)
    state = {}
    for key, ref in Wav2Lip().state_dict().items():
        shape = tuple(ref.shape)
        if key.endswith("num_batches_tracked"):
            value = np.array(0, dtype=np.int64)
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("running_mean"):
            value = rng.normal(0.0, 0.1, shape)
        elif key.endswith("weight") and len(shape) == 1:  # batch-norm gamma
            value = rng.uniform(0.3, 0.7, shape)
        elif key.endswith("bias"):
            value = rng.normal(0.0, 0.05, shape)
        else:
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.int64 if value.dtype == np.int64 else np.float32))
    return state


def random_wav2lip(seed: int = 0) -> Wav2Lip:
    model = Wav2Lip()
    model.load_state_dict(random_state_dict(seed), strict=True)
    return model.eval()


def save_checkpoint(state: dict[str, torch.Tensor], path: str | Path, data_parallel: bool = False) -> None:
    """Write weights in the official checkpoint format (used by tests and demos)."""
    if data_parallel:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": state, "global_step": 0, "global_epoch": 0}, path)
