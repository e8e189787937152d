"""The same ONNX file run in-process by the same runtime code the server runs (the CPU runner's
sessions): the baseline Triton's overhead is measured against."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from lipsync_triton.export.triton_cpu_runner import cpu_session


def inprocess_session(onnx_path: Path, runtime: str = "onnxruntime", precision: str = "auto", threads: int = 2):
    """The Triton CPU runner's own session class, configured as the runner configures it."""
    import onnx

    outputs = [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output]
    return cpu_session(str(onnx_path), {"runtime": runtime, "precision": precision, "threads": str(threads)}, None, outputs)


def inprocess_runner(onnx_path: Path, runtime: str = "onnxruntime", precision: str = "auto",
                     threads: int = 2) -> Callable[[dict[str, np.ndarray]], list]:
    """feed -> outputs, configured as the Triton CPU runner configures its own session."""
    return inprocess_session(onnx_path, runtime, precision, threads).run


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


def alternating_rounds(contenders: dict[str, Callable[[], object]], batch: int, rounds: int, seconds: float) -> dict[str, float]:
    """items/s of each contender, measured in alternating rounds so machine noise hits all alike (medians)."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            rates[name].append(items_per_second(run, batch, seconds))
    return {name: round(float(np.median(r)), 2) for name, r in rates.items()} | {"_rounds": rates}


def served_vs_inprocess(served: Callable[[], object], onnx_path: Path, batch_inputs: dict[str, np.ndarray],
                        rounds: int = 3, seconds: float = 8.0, runtime: str = "openvino") -> dict:
    """Triton (one request at a time, same batch) against the same ONNX in-process with the same
    runtime, in alternating rounds; medians and their ratio."""
    local = inprocess_runner(onnx_path, runtime)
    batch = next(iter(batch_inputs.values())).shape[0]
    rates = alternating_rounds({"inprocess": lambda: local(batch_inputs), "triton": served}, batch, rounds, seconds)
    ratios = [t / l for t, l in zip(rates["_rounds"]["triton"], rates["_rounds"]["inprocess"])]
    return {"triton_per_s": rates["triton"], "inprocess_per_s": rates["inprocess"],
            "overhead_ratio": round(float(np.median(ratios)), 3), "round_ratios": [round(r, 3) for r in ratios]}


def stack_batch(entries: list[dict[str, np.ndarray]], batch: int) -> dict[str, np.ndarray]:
    names = entries[0].keys()
    return {n: np.stack([entries[i % len(entries)][n] for i in range(batch)]) for n in names}
