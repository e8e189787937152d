"""Triton Python-backend model that serves an ONNX file on CPU with OpenVINO Runtime (default) or
ONNX Runtime: the embedded Triton build has only the Python backend, so this file stands in for
Triton's openvino/onnxruntime backends. It is copied as `model.py` into each model's version folder
and reads its config parameters:
  onnx_file   the ONNX file in the version folder (default model.onnx)
  runtime     openvino | onnxruntime
  precision   auto | bf16 | f32 (openvino): auto = bf16 where the CPU has it natively (AVX512_BF16
              or AMX, which OpenVINO reports as BF16), f32 elsewhere
  threads     inference threads (0 = the runtime's default)
  streams     OpenVINO inference streams (1: one batch at a time uses every thread)
  max_infer_batch  merged requests run in slices of at most this many items (0 = all at once):
              on CPU a larger batch buys no speed, only memory for bigger intermediate tensors
  cache_dir   OpenVINO compiled-model cache: absolute, or relative to the model folder; when that
              is not writable (a read-only mount) a per-user temporary folder is used
Triton's dynamic batcher hands `execute` several requests at once; the Python backend does not
concatenate them, so this runner does, runs ONE inference, and splits the outputs back.
It imports nothing from the project: a repository stays servable on its own. The export imports
its session classes too, so the parity check runs exactly what the server will run.
"""
import json
import os
import tempfile

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported by the export's parity check, outside Triton
    pb_utils = None


def resolve_precision(requested, capabilities):
    if requested in ("bf16", "f32"):
        return requested
    return "bf16" if "BF16" in capabilities else "f32"


def writable_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path)
        probe.close()
        return path
    except OSError:
        fallback = os.path.join(tempfile.gettempdir(), f"lipsync-ov-cache-{os.getuid()}")
        os.makedirs(fallback, exist_ok=True)
        return fallback


class OpenVinoSession:
    def __init__(self, path, params, model_dir, output_names):
        """`params`: precision, threads, cache_dir as in the config; `model_dir` anchors a relative cache_dir."""
        import openvino as ov

        core = ov.Core()
        precision = resolve_precision(params.get("precision", "auto"), core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        cache = params.get("cache_dir", "")
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": params.get("streams", "1")}
        if int(params.get("threads", "0")) > 0:
            config["INFERENCE_NUM_THREADS"] = int(params["threads"])
        if cache:
            config["CACHE_DIR"] = writable_dir(cache if os.path.isabs(cache) else os.path.join(model_dir, cache))
        self.compiled = core.compile_model(path, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(n) for n in output_names]
        self.precision = precision
        self.description = f"openvino {ov.__version__} {precision}"

    def run(self, feed):
        results = self.request.infer(feed)
        return [results[o] for o in self.outputs]


class OnnxRuntimeSession:
    def __init__(self, path, params, output_names):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("threads", "0"))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.output_names = output_names
        self.precision = "f32"
        self.description = f"onnxruntime {ort.__version__} f32"

    def run(self, feed):
        return self.session.run(self.output_names, feed)


def cpu_session(path, params, model_dir, output_names):
    runtime = params.get("runtime", "openvino")
    if runtime == "openvino":
        return OpenVinoSession(path, params, model_dir, output_names)
    if runtime == "onnxruntime":
        return OnnxRuntimeSession(path, params, output_names)
    raise ValueError(f"unknown runtime {runtime!r}: use openvino or onnxruntime")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        model_dir = args["model_repository"]
        path = os.path.join(model_dir, args["model_version"], params.get("onnx_file", "model.onnx"))
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        try:
            self.session = cpu_session(path, params, model_dir, self.output_names)
        except ValueError as exc:
            raise pb_utils.TritonModelException(str(exc)) from None
        self.max_infer_batch = int(params.get("max_infer_batch", "0"))
        self.name, self.executed = config["name"], False
        pb_utils.Logger.log_info(f"{config['name']}: {self.session.description}")

    def _run_sliced(self, feed, total):
        step = self.max_infer_batch or total
        if step >= total:
            return self.session.run(feed)
        parts = [self.session.run({k: v[i:i + step] for k, v in feed.items()}) for i in range(0, total, step)]
        return [np.concatenate(p) for p in zip(*parts)]

    def execute(self, requests):
        per_request = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names] for r in requests]
        sizes = [arrays[0].shape[0] for arrays in per_request]
        feed = {
            name: (np.concatenate([a[i] for a in per_request]) if len(per_request) > 1 else per_request[0][i])
            for i, name in enumerate(self.input_names)
        }
        outputs = self._run_sliced(feed, sum(sizes))
        if not self.executed:  # the warm-up's run, before the model is READY (the serving tests check the order)
            self.executed = True
            pb_utils.Logger.log_info(f"{self.name}: first execution, batch {sum(sizes)}")
        responses = []
        start = 0
        for size in sizes:
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(o[start:start + size])) for n, o in zip(self.output_names, outputs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
