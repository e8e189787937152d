"""The same ONNX file run in-process by ONNX Runtime: the baseline Triton's overhead is measured against."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def inprocess_throughput(onnx_path: Path, batch_inputs: dict[str, np.ndarray], threads: int = 2,
                         min_seconds: float = 8.0, warmup: int = 1) -> float:
    """Items per second for one session with `threads` intra-op threads (as the Triton runner uses)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    batch = next(iter(batch_inputs.values())).shape[0]
    for _ in range(warmup):
        session.run(None, batch_inputs)
    runs, start = 0, time.perf_counter()
    while True:
        session.run(None, batch_inputs)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and runs >= 2:
            return runs * batch / elapsed


def stack_batch(entries: list[dict[str, np.ndarray]], batch: int) -> dict[str, np.ndarray]:
    names = entries[0].keys()
    return {n: np.stack([entries[i % len(entries)][n] for i in range(batch)]) for n in names}
