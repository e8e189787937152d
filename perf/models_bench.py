"""`lipsync perf models`: perf_analyzer concurrency sweeps per model, Triton vs the same runtime
in-process at the same batch, what dynamic batching buys (same models, batcher on vs off), and
OpenVINO vs ONNX Runtime side by side."""
from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from lipsync_triton import log
from lipsync_triton.export.model_config import model_configs
from lipsync_triton.serving.server import TritonServer
from lipsync_triton.client.triton_client import TritonPool
from .inprocess import served_vs_inprocess, stack_batch
from .machine import machine_description
from .perf_analyzer import run_sweep
from .plots import throughput_latency_plot
from .runtimes_bench import RUNTIMES, compare_runtimes, runtimes_table
from .workload import ensure_repository, model_inputs, variant_repository, write_perf_analyzer_data

FULL = {"batch": {"wav2lip": 16, "face_detector": 8}, "levels": [1, 2, 4], "ab_levels": [1, 2, 4, 8, 16],
        "ab_models": ["wav2lip", "face_detector"], "trials": 8, "inproc_s": 8.0, "rounds": 3,
        # a batch-16 Wav2Lip request takes ~1 s on 2 cores: windows must hold many requests to be stable
        "ms": {"wav2lip": 12000, "face_detector": 5000}, "ab_ms": 5000, "stability": 40, "requests": 0}
TINY = {"batch": {"wav2lip": 2, "face_detector": 2}, "levels": [1, 2], "ab_levels": [1, 4],
        "ab_models": ["face_detector"], "trials": 3, "inproc_s": 0.3, "rounds": 1,
        "ms": {"wav2lip": 800, "face_detector": 800}, "ab_ms": 800, "stability": 100,
        "requests": 4}  # the smoke run checks the harness, not the numbers: a fixed request count, no stability wait


def served_runtime(repo: Path) -> str:
    """The CPU runtime a repository's configs name (older exports: onnxruntime)."""
    text = (repo / "wav2lip" / "config.pbtxt").read_text()
    match = re.search(r'key: "runtime" value \{ string_value: "(\w+)" \}', text)
    return match.group(1) if match else "onnxruntime"


def run_models_bench(out: Path, repository: Path | None = None, tiny: bool = False, shared_memory: bool = False) -> dict:
    plan = TINY if tiny else FULL
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    repository = ensure_repository(work, repository)
    inputs = model_inputs(work)
    data_files = {m: write_perf_analyzer_data(e, work / f"{m}_input.json") for m, e in inputs.items()}
    shm = "system" if shared_memory else "none"
    results: dict = {"machine": machine_description(), "mode": "tiny" if tiny else "full", "shared_memory": shm,
                     "models": {}, "dynamic_batching": {}}
    sweeps = {}
    with TritonServer(repository, log_path=work / "tritonserver.log") as server:
        for model, batch in plan["batch"].items():
            points = run_sweep(server.grpc_url, model, batch, plan["levels"], data_files[model], out / f"{model}_sweep.csv",
                               plan["ms"][model], plan["trials"], shm, plan["stability"], plan["requests"])
            sweeps[model] = points
            arrays = stack_batch(inputs[model], batch)
            outputs = [o.name for o in next(c for c in model_configs("cpu") if c.model.name == model).model.outputs]
            pool = TritonPool(server.grpc_url)
            compare = served_vs_inprocess(lambda: pool.infer(model, arrays, outputs), repository / model / "1" / "model.onnx",
                                          arrays, rounds=plan["rounds"], seconds=plan["inproc_s"], runtime=served_runtime(repository))
            results["models"][model] = {
                "batch": batch, "sweep": [asdict(p) for p in points], "inprocess_per_s": compare["inprocess_per_s"],
                "triton_c1_per_s": compare["triton_per_s"], "triton_best_per_s": round(max(p.throughput for p in points), 2),
                "overhead_ratio": compare["overhead_ratio"], "round_ratios": compare["round_ratios"],
            }
            log.event("model_perf", model=model, batch=batch, triton=compare["triton_per_s"],
                      inprocess=compare["inprocess_per_s"], ratio=compare["overhead_ratio"])
        ab_on = {m: run_sweep(server.grpc_url, m, 1, plan["ab_levels"], data_files[m], out / f"{m}_b1_dynamic.csv",
                              plan["ab_ms"], plan["trials"], shm, plan["stability"], plan["requests"]) for m in plan["ab_models"]}
    off_repo = variant_repository(repository, work / "model_repository_no_batching", dynamic_batching=False)
    with TritonServer(off_repo, log_path=work / "tritonserver_no_batching.log") as server:
        ab_off = {m: run_sweep(server.grpc_url, m, 1, plan["ab_levels"], data_files[m], out / f"{m}_b1_no_batching.csv",
                               plan["ab_ms"], plan["trials"], shm, plan["stability"], plan["requests"]) for m in plan["ab_models"]}
    for model in plan["ab_models"]:
        rows = [{"concurrency": a.concurrency, "dynamic_per_s": round(a.throughput, 2), "off_per_s": round(b.throughput, 2),
                 "ratio": round(a.throughput / b.throughput, 3), "dynamic_p95_ms": round(a.p95_ms, 1), "off_p95_ms": round(b.p95_ms, 1)}
                for a, b in zip(ab_on[model], ab_off[model])]
        results["dynamic_batching"][model] = rows
        throughput_latency_plot({"dynamic batching": ab_on[model], "no batching": ab_off[model]},
                                f"{model}: batch-1 requests, concurrency sweep", out / f"{model}_dynamic_batching.png")
    variants = {r: variant_repository(repository, work / f"model_repository_{r}", cpu_runtime=r) for r in RUNTIMES}
    results["runtimes"] = compare_runtimes(variants, work, inputs, plan["batch"], plan["rounds"], plan["inproc_s"])
    for model, points in sweeps.items():
        throughput_latency_plot({f"{model} batch {plan['batch'][model]}": points}, f"{model} over gRPC ({results['machine']['cores']} cores)",
                                out / f"{model}_throughput_latency.png")
    (out / "models.json").write_text(json.dumps(results, indent=2) + "\n")
    print(models_table(results))
    print()
    print(runtimes_table(results["runtimes"]))
    return results


def models_table(results: dict) -> str:
    lines = ["| model | batch | Triton, 1 in flight (/s) | Triton best of sweep (/s) | in-process ORT (/s) | Triton / in-process (median of rounds) |",
             "|---|---|---|---|---|---|"]
    for model, r in results["models"].items():
        lines.append(f"| {model} | {r['batch']} | {r['triton_c1_per_s']} | {r['triton_best_per_s']} | {r['inprocess_per_s']} | {r['overhead_ratio']} |")
    lines += ["", "| model | concurrency | dynamic batching (/s) | no batching (/s) | ratio | p95 ms on / off |", "|---|---|---|---|---|---|"]
    for model, rows in results["dynamic_batching"].items():
        for row in rows:
            lines.append(f"| {model} | {row['concurrency']} | {row['dynamic_per_s']} | {row['off_per_s']} | {row['ratio']} | "
                         f"{row['dynamic_p95_ms']} / {row['off_p95_ms']} |")
    return "\n".join(lines)
