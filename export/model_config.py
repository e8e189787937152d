"""Triton model configurations declared once as dataclasses and rendered to config.pbtxt.

`MODELS` is the single declaration of every served model: its contract with clients (names and
tensors, lipsync_triton/model_contract.py) plus how it is batched; the
profiles only choose how a model runs (Python backend + ONNX Runtime on CPU, onnxruntime backend
with the TensorRT accelerator or a TensorRT plan on GPU). The CPU and GPU configs therefore cannot
drift in anything a client depends on.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from lipsync_triton import model_contract as contract
from lipsync_triton.model_contract import DEFAULT_DETECTOR_SIZE, WEIGHTS_PARAMETER, ModelContract, Tensor as TensorSpec

# The official Triton image the GPU profile is written for (onnxruntime + tensorrt backends).
GPU_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
# Where GPU pods keep TensorRT engines across restarts: a volume at this path (the GPU image's
# ENGINE_CACHE, the chart's engine-cache mount). The `gpu` profile's ONNX Runtime accelerator caches
# its engines and timing cache here too, so a pod start reuses them instead of rebuilding.
ENGINE_CACHE_DIR = "/engine-cache"


@dataclass(frozen=True)
class ModelSpec:
    """A served model: its contract with clients, and how Triton batches it."""

    contract: ModelContract
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    warmup_batch_size: int
    queue_delay_us: dict = field(default_factory=lambda: {"KIND_CPU": 1000, "KIND_GPU": 1000})

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.contract.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.contract.outputs

    @property
    def doc(self) -> str:
        return self.contract.doc


@dataclass(frozen=True)
class Profile:
    """How models run: which backend, where, with what delay and parallelism."""

    name: str
    kind: str  # KIND_CPU | KIND_GPU
    instance_count: int
    runtime: str  # "python-cpu" | "openvino" | "onnxruntime-tensorrt" | "tensorrt-plan"
    threads: int = 0
    streams: int = 1
    # CPU: merged requests run in slices of this size; batches beyond it buy no speed on a CPU
    # (perf/BENCHMARKS.md: 53.3 vs 53.6 frames/s at 16 vs 32) but cost memory.
    max_infer_batch: int = 0
    cpu_runtime: str = "openvino"  # python-cpu: the runner's runtime, openvino | onnxruntime
    precision: str = "auto"  # python-cpu with openvino: auto (bf16 where the CPU has it) | bf16 | f32
    dynamic_batching: bool = True


@dataclass(frozen=True)
class ModelConfig:
    model: ModelSpec
    profile: Profile
    input_dims_override: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # sha256 of the exported model file: clients read it (e.g. the presenter cache keys on the
    # detector's identity). Only known at export time; the committed configs leave it out.
    content_sha256: str | None = None
    # What the Wav2Lip weights are ("random" or "checkpoint sha256:<16 hex>"): clients, /readyz, the UI
    # and each job's result say so (random weights make a blurred mouth, not a bug).
    weights: str | None = None

    def to_pbtxt(self) -> str:
        return render_pbtxt(self)


WAV2LIP = ModelSpec(
    contract.WAV2LIP,
    max_batch_size=128,
    preferred_batch_sizes=(16, 32, 64, 128),
    warmup_batch_size=16,
    # On 2 CPU cores batching buys no throughput (compute-bound) and a 10 ms wait cost 24% at
    # concurrency 1-2 (perf/BENCHMARKS.md); on GPUs batching is the win and 2 ms fills batches.
    queue_delay_us={"KIND_CPU": 2000, "KIND_GPU": 2000},
)

FACE_DETECTOR = ModelSpec(
    contract.FACE_DETECTOR,
    max_batch_size=32,
    preferred_batch_sizes=(8, 16, 32),
    warmup_batch_size=4,
    # ~30 ms per frame on 2 cores: a long wait would cost more than batching gains on CPU.
    queue_delay_us={"KIND_CPU": 1000, "KIND_GPU": 1000},
)

MODELS: tuple[ModelSpec, ...] = (WAV2LIP, FACE_DETECTOR)
GPU_MAX_QUEUE_REQUESTS = 256  # per model instance group: a few seconds of work on one GPU
PRIORITY_LEVELS = 2  # 1 = live sessions (client/live.py), 2 = everything else (the default level)

PROFILES: dict[str, Profile] = {
    # 2 threads = the cores of the reference CPU box; one instance, since a second would only split
    # the same two cores. The embedded server runs OpenVINO (or ONNX Runtime) in the Python backend.
    "cpu": Profile("cpu", "KIND_CPU", instance_count=1, runtime="python-cpu", threads=2, max_infer_batch=16),
    # The same models for the official container's native OpenVINO backend (same names and tensors).
    "cpu-openvino": Profile("cpu-openvino", "KIND_CPU", instance_count=1, runtime="openvino", threads=2),
    # Two instances per GPU overlap one batch's transfers with another's compute.
    "gpu": Profile("gpu", "KIND_GPU", instance_count=2, runtime="onnxruntime-tensorrt"),
    "gpu-trt": Profile("gpu-trt", "KIND_GPU", instance_count=2, runtime="tensorrt-plan"),
}


CPU_RUNTIMES = ("openvino", "onnxruntime")
PRECISIONS = ("auto", "bf16", "f32")
OPENVINO_CACHE_DIR = "ov_cache"  # compiled-model cache, in the model folder (Triton ignores non-numeric folders)


def model_configs(profile: str, detector_size: tuple[int, int] = DEFAULT_DETECTOR_SIZE, dynamic_batching: bool = True,
                  cpu_runtime: str = "openvino", precision: str = "auto") -> list[ModelConfig]:
    prof = replace(PROFILES[profile], dynamic_batching=dynamic_batching, cpu_runtime=cpu_runtime, precision=precision)
    return [
        ModelConfig(m, prof, {contract.FACE_DETECTOR.inputs[0].name: (*detector_size, 3)} if m is FACE_DETECTOR else {})
        for m in MODELS
    ]


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def tensorrt_accelerator_cache(cfg: ModelConfig) -> dict[str, str]:
    """ONNX Runtime TensorRT accelerator keys (passed through by Triton's onnxruntime backend, see its
    README's parameter table) for ONE engine per model that every batch the dynamic batcher forms
    fits: an explicit profile batch 1 .. max_batch_size (opt max/2, as the GPU image's trtexec
    builds), cached with its timing cache in the engine volume rather than in the pod's /tmp."""
    m = cfg.model

    def shapes(batch: int) -> str:
        return ",".join(f"{t.name}:" + "x".join(str(d) for d in (batch, *cfg.input_dims_override.get(t.name, t.dims))) for t in m.inputs)

    cache = f"{ENGINE_CACHE_DIR}/onnxruntime-trt/{m.name}"
    return {
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": cache,
        "trt_profile_min_shapes": shapes(1),
        "trt_profile_opt_shapes": shapes(max(1, m.max_batch_size // 2)),
        "trt_profile_max_shapes": shapes(m.max_batch_size),
    }


def render_pbtxt(cfg: ModelConfig) -> str:
    m, p = cfg.model, cfg.profile
    lines = [f"# {m.doc}", f"# generated by lipsync_triton.export.model_config (profile {p.name}): do not edit", f"name: {_q(m.name)}"]
    if p.runtime == "python-cpu":
        lines.append('backend: "python"')
    elif p.runtime == "openvino":
        lines += ['backend: "openvino"', 'default_model_filename: "model.onnx"']
    elif p.runtime == "onnxruntime-tensorrt":
        lines += ['backend: "onnxruntime"', 'default_model_filename: "model.onnx"']
    else:
        lines += ['platform: "tensorrt_plan"', 'default_model_filename: "model.plan"']
    lines.append(f"max_batch_size: {m.max_batch_size}")

    def tensors(key: str, specs: tuple[TensorSpec, ...]) -> None:
        for t in specs:
            dims = cfg.input_dims_override.get(t.name, t.dims)
            lines.append(f"{key} {{  # {t.doc}")
            lines.append(f"  name: {_q(t.name)}")
            lines.append(f"  data_type: {t.data_type}")
            lines.append(f"  dims: {_dims(dims)}")
            lines.append("}")

    tensors("input", m.inputs)
    tensors("output", m.outputs)
    lines.append("instance_group [ {")
    lines.append(f"  count: {p.instance_count}")
    lines.append(f"  kind: {p.kind}")
    lines.append("} ]")
    if p.dynamic_batching:
        lines.append("dynamic_batching {")
        if p.kind == "KIND_CPU":  # as measured on CPU (perf/BENCHMARKS.md)
            lines.append(f"  preferred_batch_size: {_dims(m.preferred_batch_sizes)}")
        lines.append(f"  max_queue_delay_microseconds: {m.queue_delay_us[p.kind]}")
        # Two request priorities: live sessions send 1 (served first); batch jobs use the default 2.
        lines.append(f"  priority_levels: {PRIORITY_LEVELS}")
        lines.append(f"  default_priority_level: {PRIORITY_LEVELS}")
        if p.kind == "KIND_GPU":
            # No preferred sizes on GPU: the client's requests of 16 frames would each match one and
            # dispatch at once, so the queue delay never merged them (Triton advises preferred sizes
            # only for multi-profile TensorRT). A bounded queue answers RESOURCE_EXHAUSTED under
            # overload, which the client retries on another server, instead of queueing without end.
            lines.append(f"  default_queue_policy {{ max_queue_size: {GPU_MAX_QUEUE_REQUESTS} }}")
        lines.append("}")
    params: dict[str, str] = {}
    if p.runtime == "python-cpu":
        params = {"onnx_file": "model.onnx", "runtime": p.cpu_runtime, "precision": p.precision, "threads": str(p.threads),
                  "streams": str(p.streams), "max_infer_batch": str(p.max_infer_batch), "cache_dir": OPENVINO_CACHE_DIR}
    elif p.runtime == "openvino":  # the backend's own keys; its default precision is bf16 where the CPU has it
        params = {"INFERENCE_NUM_THREADS": str(p.threads), "NUM_STREAMS": str(p.streams), "PERFORMANCE_HINT": "LATENCY"}
    if cfg.content_sha256:
        params[contract.MODEL_SHA256_PARAMETER] = cfg.content_sha256
    if cfg.weights:
        params[WEIGHTS_PARAMETER] = cfg.weights
    for key, value in params.items():
        lines.append(f"parameters {{ key: {_q(key)} value {{ string_value: {_q(value)} }} }}")
    if p.runtime == "onnxruntime-tensorrt":
        accelerator = {"precision_mode": "FP16", "max_workspace_size_bytes": "4294967296", **tensorrt_accelerator_cache(cfg)}
        lines.append("optimization { execution_accelerators { gpu_execution_accelerator [ {")
        lines.append('  name: "tensorrt"')
        lines += [f"  parameters {{ key: {_q(k)} value: {_q(v)} }}" for k, v in accelerator.items()]
        lines.append("} ] } }")
    # Warm up before READY so the first user request does not pay the cold start.
    lines.append("model_warmup [ {")
    lines.append(f"  name: {_q(f'warmup_batch_{m.warmup_batch_size}')}")
    lines.append(f"  batch_size: {m.warmup_batch_size}")
    for t in m.inputs:
        dims = cfg.input_dims_override.get(t.name, t.dims)
        lines.append(f"  inputs {{ key: {_q(t.name)} value {{ data_type: {t.data_type} dims: {_dims(dims)} random_data: true }} }}")
    lines.append("} ]")
    return "\n".join(lines) + "\n"


def committed_configs() -> dict[str, str]:
    """{relative path: text} of the configs committed under model_repository/ (one folder per profile)."""
    return {f"{profile}/{cfg.model.name}/config.pbtxt": cfg.to_pbtxt() for profile in PROFILES for cfg in model_configs(profile)}


def write_committed_configs(root: str) -> list[str]:
    from pathlib import Path

    written = []
    for rel, text in committed_configs().items():
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(str(path))
    return written


if __name__ == "__main__":  # python -m lipsync_triton.export.model_config model_repository
    import sys

    for p in write_committed_configs(sys.argv[1] if len(sys.argv) > 1 else "model_repository"):
        print(p)
