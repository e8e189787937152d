"""OpenVINO f32 with oneDNN capped at AVX2, on an AVX-512 machine: a stand-in for the AVX2-only
machines of this project's kind, which these sessions could not get. The cap (ONEDNN_MAX_CPU_ISA,
read once at oneDNN's start, hence a child process) moves every convolution to oneDNN's AVX2
kernels (the kernel names are recorded to prove it); OpenVINO's own small kernels may still use
AVX-512. Against ONNX Runtime fp32 running with AVX-512 it is a conservative ratio: on a real
AVX2-only CPU ONNX Runtime loses its AVX-512 kernels too.

Run as `python -m lipsync_triton.perf.isa_capped ONNX INPUTS.npz SECONDS` (prints one JSON line).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from lipsync_triton.errors import LipsyncError
from .inprocess import inprocess_session, items_per_second

CAP = "AVX2"


def capped_openvino_rate(onnx_path: Path, batch_inputs: dict[str, np.ndarray], seconds: float) -> dict:
    """items/s of the model in OpenVINO f32 (2 threads) with oneDNN capped at AVX2, in a child process."""
    with tempfile.TemporaryDirectory(prefix="lipsync-isa-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, **batch_inputs)
        proc = subprocess.run([sys.executable, "-m", "lipsync_triton.perf.isa_capped", str(onnx_path), str(inputs), str(seconds)],
                              capture_output=True, text=True, env={**os.environ, "ONEDNN_MAX_CPU_ISA": CAP})
    if proc.returncode != 0:
        raise LipsyncError(f"AVX2-capped OpenVINO run failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _main(onnx_path: str, inputs_path: str, seconds: str) -> None:
    session = inprocess_session(Path(onnx_path), "openvino", "f32")  # the server's runner, 2 threads
    feed = dict(np.load(inputs_path))
    batch = next(iter(feed.values())).shape[0]
    rate = items_per_second(lambda: session.run(feed), batch, float(seconds))
    kernels = Counter(op.get_rt_info()["primitiveType"].astype(str) for op in session.compiled.get_runtime_model().get_ordered_ops()
                      if op.get_rt_info()["layerType"].astype(str) == "Convolution")
    print(json.dumps({"per_s": round(rate, 2), "cap": os.environ.get("ONEDNN_MAX_CPU_ISA"), "convolution_kernels": dict(kernels)}))


if __name__ == "__main__":
    _main(*sys.argv[1:4])
