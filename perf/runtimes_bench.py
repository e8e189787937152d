"""OpenVINO against ONNX Runtime on the same CPU, side by side: each served by its own embedded
Triton (same models, configs from the one declaration), both against in-process ONNX Runtime fp32,
measured in alternating rounds; plus accuracy vs fp32, server peak RSS and the time to READY with
an empty and a filled OpenVINO compiled-model cache."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lipsync_triton import log
from lipsync_triton.client.triton_client import TritonPool
from lipsync_triton.export.model_config import MODELS
from lipsync_triton.export.triton_cpu_runner import resolve_precision
from lipsync_triton.serving.server import TritonServer
from .e2e_bench import server_peak_rss_mb
from .inprocess import alternating_rounds, inprocess_runner, stack_batch
from .isa_capped import capped_openvino_rate
from .machine import cpu_flags

RUNTIMES = ("openvino", "onnxruntime")


def _timed_start(repo: Path, log_path: Path) -> tuple[TritonServer, float]:
    started = time.monotonic()
    server = TritonServer(repo, log_path=log_path).start()
    return server, round(time.monotonic() - started, 2)


def compare_runtimes(variants: dict[str, Path], work: Path, inputs: dict, batches: dict[str, int], rounds: int, seconds: float) -> dict:
    import openvino as ov

    precision = resolve_precision("auto", ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    servers, result = {}, {"openvino_precision": precision, "servers": {}, "models": {}}
    try:
        for runtime, repo in variants.items():
            servers[runtime], ready_s = _timed_start(repo, work / f"tritonserver_{runtime}.log")
            result["servers"][runtime] = {"ready_first_start_s": ready_s}
        for spec in MODELS:
            model, batch = spec.name, batches[spec.name]
            arrays = stack_batch(inputs[model], batch)
            outputs = [o.name for o in spec.outputs]
            onnx_path = variants["onnxruntime"] / model / "1" / "model.onnx"
            reference = inprocess_runner(onnx_path, "onnxruntime")
            pools = {r: TritonPool(servers[r].grpc_url) for r in RUNTIMES}
            contenders = {"inprocess_onnxruntime_f32": lambda: reference(arrays)}
            contenders |= {f"triton_{r}": (lambda p=pools[r]: p.infer(model, arrays, outputs)) for r in RUNTIMES}
            rates = alternating_rounds(contenders, batch, rounds, seconds)
            served = pools["openvino"].infer(model, arrays, outputs)[outputs[0]]
            expected = reference(arrays)[0]
            diff = np.abs(served.astype(np.float64) - expected.astype(np.float64))
            base = rates["inprocess_onnxruntime_f32"]
            result["models"][model] = {
                "batch": batch, **{k: v for k, v in rates.items() if not k.startswith("_")},
                "openvino_vs_inprocess_onnxruntime": round(rates["triton_openvino"] / base, 3),
                "openvino_vs_served_onnxruntime": round(rates["triton_openvino"] / rates["triton_onnxruntime"], 3),
                "openvino_max_abs_diff": round(float(diff.max()), 4), "openvino_mean_abs_diff": round(float(diff.mean()), 4),
            }
            if "avx512f" in cpu_flags():  # an AVX2-only machine's OpenVINO f32, approximated (see isa_capped)
                capped = capped_openvino_rate(onnx_path, arrays, seconds * rounds)
                result["models"][model] |= {"openvino_f32_avx2_cap_per_s": capped["per_s"],
                                            "openvino_f32_avx2_cap_vs_inprocess_onnxruntime": round(capped["per_s"] / base, 3),
                                            "avx2_cap_convolution_kernels": capped["convolution_kernels"]}
            log.event("runtime_perf", model=model, **{k: v for k, v in result["models"][model].items() if k != "batch"})
        for runtime in RUNTIMES:
            result["servers"][runtime]["peak_rss_mb"] = server_peak_rss_mb(servers[runtime].pid())
    finally:
        for server in servers.values():
            server.stop()
    # A second start of the OpenVINO server finds its compiled models in the cache.
    server, ready_s = _timed_start(variants["openvino"], work / "tritonserver_openvino_cached.log")
    server.stop()
    result["servers"]["openvino"]["ready_cached_s"] = ready_s
    return result


def runtimes_table(result: dict) -> str:
    lines = [f"OpenVINO precision on this CPU: {result['openvino_precision']}", "",
             "| model | batch | in-process ORT f32 (/s) | Triton + OpenVINO (/s) | Triton + ORT (/s) | OpenVINO / in-process ORT | "
             "OpenVINO / served ORT | OpenVINO max / mean abs diff vs ORT f32 |", "|---|---|---|---|---|---|---|---|"]
    for model, r in result["models"].items():
        lines.append(f"| {model} | {r['batch']} | {r['inprocess_onnxruntime_f32']} | {r['triton_openvino']} | {r['triton_onnxruntime']} | "
                     f"{r['openvino_vs_inprocess_onnxruntime']} | {r['openvino_vs_served_onnxruntime']} | "
                     f"{r['openvino_max_abs_diff']} / {r['openvino_mean_abs_diff']} |")
    capped = {m: r for m, r in result["models"].items() if "openvino_f32_avx2_cap_per_s" in r}
    if capped:
        lines += ["", "AVX2-only stand-in: OpenVINO f32 in-process with oneDNN capped at AVX2 vs in-process ORT f32 (with AVX-512)", "",
                  "| model | OpenVINO f32, AVX2 cap (/s) | ratio | convolution kernels |", "|---|---|---|---|"]
        lines += [f"| {m} | {r['openvino_f32_avx2_cap_per_s']} | {r['openvino_f32_avx2_cap_vs_inprocess_onnxruntime']} | "
                  f"{', '.join(f'{k} x{v}' for k, v in r['avx2_cap_convolution_kernels'].items())} |" for m, r in capped.items()]
    lines += ["", "| server | READY, first start (s) | READY, cached start (s) | peak RSS MB |", "|---|---|---|---|"]
    for runtime, s in result["servers"].items():
        lines.append(f"| {runtime} | {s['ready_first_start_s']} | {s.get('ready_cached_s', '-')} | {s['peak_rss_mb']} |")
    return "\n".join(lines)
