"""Triton Python-backend model that serves an ONNX file with ONNX Runtime (CPU profile).

One runner serves every model of the CPU profile: the embedded Triton build has only the Python
backend, so this file stands in for Triton's onnxruntime backend. It is copied as `model.py` into
each model's version folder. Its config parameters:
  onnx_file         the ONNX file in the version folder (default model.onnx)
  intra_op_threads  ONNX Runtime threads per inference (0 = ORT default)
Triton's dynamic batcher hands `execute` several requests at once; the Python backend does not
concatenate them, so this runner does, runs ONE session call, and splits the outputs back.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = os.path.join(version_dir, params.get("onnx_file", "model.onnx"))
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]

    def execute(self, requests):
        per_request = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names] for r in requests]
        sizes = [arrays[0].shape[0] for arrays in per_request]
        feed = {
            name: (np.concatenate([a[i] for a in per_request]) if len(per_request) > 1 else per_request[0][i])
            for i, name in enumerate(self.input_names)
        }
        outputs = self.session.run(self.output_names, feed)
        responses = []
        start = 0
        for size in sizes:
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(o[start:start + size])) for n, o in zip(self.output_names, outputs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
