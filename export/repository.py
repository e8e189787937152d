"""Write a complete Triton model repository: export -> check -> configs, atomically.

Each step can be rerun on its own (model_navigator style): `export_wav2lip_onnx`, `check_parity`,
`export_face_detector`, `build_engine`, `render_pbtxt`. This module only sequences them.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lipsync_triton import log
from lipsync_triton.errors import LipsyncError
from lipsync_triton.files import file_sha256
from .checkpoint import load_wav2lip, random_wav2lip
from .face_detector import check_detector, export_face_detector
from .cpu_parity import check_wav2lip_cpu
from lipsync_triton.model_contract import DEFAULT_DETECTOR_SIZE, RANDOM_WEIGHTS
from .model_config import (CPU_RUNTIMES, FACE_DETECTOR, PRECISIONS, PROFILES, WAV2LIP, ModelConfig,
                           model_configs)
from .tensorrt import build_engine, tensorrt_available
from .wav2lip_onnx import check_parity, convert_fp16, export_wav2lip_onnx

RUNNER = Path(__file__).with_name("triton_cpu_runner.py")


@dataclass
class ExportOptions:
    out: Path
    profile: str = "cpu"
    checkpoint: Path | None = None
    random_weights: bool = False
    seed: int = 0
    detector_size: tuple[int, int] = DEFAULT_DETECTOR_SIZE
    detector_onnx: Path | None = None
    fp16: bool = False
    tensorrt: bool = False
    dynamic_batching: bool = True
    cpu_runtime: str = "openvino"  # cpu profile: openvino | onnxruntime
    precision: str = "auto"  # cpu profile with openvino: auto | bf16 | f32


@dataclass
class ExportReport:
    repository: str
    profile: str
    weights: str
    detector_size: tuple = ()
    parity: list = field(default_factory=list)
    detector_check: dict = field(default_factory=dict)
    cpu_runtime: dict = field(default_factory=dict)
    models: list = field(default_factory=list)
    tensorrt: str = "not requested"
    seconds: float = 0.0
    checkpoint_sha256: str = ""  # empty for random weights: a service compares it with LIPSYNC_CHECKPOINT's


def _model_dir(root: Path, cfg: ModelConfig) -> Path:
    version = root / cfg.model.name / "1"
    version.mkdir(parents=True, exist_ok=True)
    if cfg.profile.runtime == "python-cpu":
        shutil.copyfile(RUNNER, version / "model.py")
    return version


TENSORRT_PLAN_CONFIG = "config.tensorrt_plan.pbtxt"  # beside a gpu profile's config: what the GPU image serves


def _write_config(root: Path, cfg: ModelConfig, model_file: Path, weights: str | None = None) -> None:
    """config.pbtxt, carrying the model file's sha256 so clients can tell exports apart. A gpu
    profile also gets the tensorrt_plan config of the same model, which the GPU image
    (docker/build_engines.py) serves once it has built the engine for its GPU."""
    digest = file_sha256(model_file)
    (root / cfg.model.name / "config.pbtxt").write_text(replace(cfg, content_sha256=digest, weights=weights).to_pbtxt())
    if cfg.profile.name == "gpu":
        plan = replace(cfg, profile=PROFILES["gpu-trt"], content_sha256=digest, weights=weights)
        (root / cfg.model.name / TENSORRT_PLAN_CONFIG).write_text(plan.to_pbtxt())


def export_repository(opts: ExportOptions) -> ExportReport:
    """Export both models for one profile into `opts.out`; nothing appears there unless all checks pass."""
    started = time.monotonic()
    if opts.checkpoint is None and not opts.random_weights:
        raise LipsyncError("no weights: pass --checkpoint wav2lip_gan.pth, or --random-weights for a demo/test export")
    if opts.checkpoint is not None and opts.random_weights:
        raise LipsyncError("--checkpoint and --random-weights exclude each other; choose one")
    h, w = opts.detector_size
    if h % 32 or w % 32 or h <= 0 or w <= 0:
        raise LipsyncError(f"--detector-size {h}x{w}: height and width must be positive multiples of 32 (e.g. 384x640)")
    if opts.checkpoint is not None:
        net = load_wav2lip(opts.checkpoint)
        checkpoint_sha256 = file_sha256(opts.checkpoint)
        weights = f"checkpoint {opts.checkpoint} sha256={checkpoint_sha256[:16]}"
        served_weights = f"checkpoint sha256:{checkpoint_sha256[:16]}"
    else:
        net = random_wav2lip(opts.seed)
        checkpoint_sha256, weights, served_weights = "", f"RANDOM (seed {opts.seed})", RANDOM_WEIGHTS
        log.warn("exporting RANDOM Wav2Lip weights: lips will be noise; pass --checkpoint wav2lip_gan.pth for real output",
                 seed=opts.seed)

    profile = opts.profile
    if opts.tensorrt:
        if profile != "gpu":
            raise LipsyncError("--tensorrt needs --profile gpu")
        profile = "gpu-trt"
    if opts.cpu_runtime not in CPU_RUNTIMES or opts.precision not in PRECISIONS:
        raise LipsyncError(f"--runtime {opts.cpu_runtime} --precision {opts.precision}: runtime is one of {', '.join(CPU_RUNTIMES)}, "
                           f"precision one of {', '.join(PRECISIONS)}")
    configs = {c.model.name: c for c in model_configs(profile, opts.detector_size, opts.dynamic_batching, opts.cpu_runtime, opts.precision)}
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    report = ExportReport(repository=str(out), profile=profile, weights=weights, detector_size=tuple(opts.detector_size),
                          checkpoint_sha256=checkpoint_sha256)
    try:
        wav_dir = _model_dir(staging, configs[WAV2LIP.name])
        onnx_path = export_wav2lip_onnx(net, wav_dir / "model.onnx")
        parity = check_parity(net, onnx_path, "fp32")
        report.parity.append(asdict(parity) | {"model": WAV2LIP.name})
        log.event("parity", model=WAV2LIP.name, precision="fp32", max_abs_diff=parity.max_abs_diff,
                  max_uint8_diff=parity.max_uint8_diff, tolerance=parity.tolerance)
        if opts.fp16:
            fp16_path = convert_fp16(onnx_path, wav_dir / "model_fp16.onnx")
            parity16 = check_parity(net, fp16_path, "fp16")
            report.parity.append(asdict(parity16) | {"model": WAV2LIP.name})
            log.event("parity", model=WAV2LIP.name, precision="fp16", max_abs_diff=parity16.max_abs_diff,
                      max_uint8_diff=parity16.max_uint8_diff, tolerance=parity16.tolerance)
            if profile.startswith("gpu"):  # GPUs serve the half-precision graph
                fp16_path.replace(onnx_path)
        if profile == "cpu":  # the runtime and precision that will serve, on real inputs
            cpu = check_wav2lip_cpu(net, onnx_path, opts.cpu_runtime, opts.precision)
            report.cpu_runtime = asdict(cpu)
            log.event("parity", model=WAV2LIP.name, runtime=cpu.runtime, precision=cpu.precision, max_uint8_diff=cpu.max_uint8_diff,
                      mean_uint8_diff=cpu.mean_uint8_diff, tolerance=f"{cpu.tolerance[0]}/{cpu.tolerance[1]}")
        _write_config(staging, configs[WAV2LIP.name], onnx_path, served_weights)
        det_dir = _model_dir(staging, configs[FACE_DETECTOR.name])
        det_path = export_face_detector(det_dir / "model.onnx", opts.detector_onnx)
        _write_config(staging, configs[FACE_DETECTOR.name], det_path)
        served = (opts.cpu_runtime, opts.precision) if profile == "cpu" else ("onnxruntime", "f32")
        report.detector_check = check_detector(det_path, opts.detector_size, *served)
        log.event("detector_check", astronaut_score=report.detector_check["astronaut"]["best_score"],
                  noise_score=report.detector_check["noise"]["best_score"])

        if profile == "gpu-trt":
            report.tensorrt = f"engines built with {tensorrt_available()}"
            for version, cfg, src in ((wav_dir, configs[WAV2LIP.name], onnx_path), (det_dir, configs[FACE_DETECTOR.name], det_path)):
                build_engine(src, version / "model.plan", cfg.model, cfg.input_dims_override, fp16=True)
        elif profile == "gpu":
            how = tensorrt_available()
            report.tensorrt = (
                f"TensorRT found ({how}): pass --tensorrt to prebuild engines" if how else
                "no GPU/TensorRT here: onnxruntime backend with the TensorRT accelerator (FP16, engine cache) builds engines at load"
            )
            log.event("tensorrt", status=report.tensorrt)
        report.models = [name for name in configs]
        report.seconds = round(time.monotonic() - started, 2)
        (staging / "export.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace `out` by `staging` with renames, so readers never see a half-written repository."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
