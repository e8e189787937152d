"""lipsync-triton: lip-sync presenter videos through NVIDIA Triton.

The Python API, importable from here (loaded on first use, so `import lipsync_triton` stays cheap):

    from lipsync_triton import LipSyncClient, generate, GenerateOptions, GenerateResult
    from lipsync_triton import LipsyncError, TransientError, ServerUnavailable, Cancelled

Subpackages follow the data path: preprocessing (media, mel, faces), client (Triton gRPC, the job),
export (checkpoint -> model repository), serving (tritonserver), service (the job service), perf.
"""
from __future__ import annotations

from importlib import import_module

from .errors import Cancelled, LipsyncError, ServerUnavailable, TransientError

_LAZY = {"generate": "lipsync_triton.client.generate", "LipSyncClient": "lipsync_triton.client.generate",
         "GenerateResult": "lipsync_triton.client.generate", "GenerateOptions": "lipsync_triton.client.options"}

__all__ = ["LipSyncClient", "generate", "GenerateOptions", "GenerateResult", "LipsyncError", "TransientError",
           "ServerUnavailable", "Cancelled"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lipsync_triton' has no attribute {name!r}")
