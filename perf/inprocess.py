"""The same ONNX file run in-process by ONNX Runtime: the baseline Triton's overhead is measured against."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort


def onnx_session(onnx_path: Path, threads: int = 2) -> ort.InferenceSession:
    """A session configured as the Triton CPU runner configures its own."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def items_per_second(run: Callable[[], object], batch: int, min_seconds: float) -> float:
    """Call `run` (one batch) until min_seconds have passed (at least twice) -> items/s."""
    run()  # warm
    runs, start = 0, time.perf_counter()
    while True:
        run()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and runs >= 2:
            return runs * batch / elapsed


def served_vs_inprocess(served: Callable[[], object], onnx_path: Path, batch_inputs: dict[str, np.ndarray],
                        rounds: int = 3, seconds: float = 8.0) -> dict:
    """Triton (one request at a time, same batch) against the same ONNX in-process, measured in
    alternating rounds so machine noise hits both sides alike; medians and their ratio."""
    session = onnx_session(onnx_path)
    batch = next(iter(batch_inputs.values())).shape[0]
    triton, local = [], []
    for _ in range(rounds):
        local.append(items_per_second(lambda: session.run(None, batch_inputs), batch, seconds))
        triton.append(items_per_second(served, batch, seconds))
    ratios = [t / l for t, l in zip(triton, local)]
    return {"triton_per_s": round(float(np.median(triton)), 2), "inprocess_per_s": round(float(np.median(local)), 2),
            "overhead_ratio": round(float(np.median(ratios)), 3), "round_ratios": [round(r, 3) for r in ratios]}


def stack_batch(entries: list[dict[str, np.ndarray]], batch: int) -> dict[str, np.ndarray]:
    names = entries[0].keys()
    return {n: np.stack([entries[i % len(entries)][n] for i in range(batch)]) for n in names}
