"""TensorRT engine builds for the GPU profile (trtexec or the TensorRT Python API)."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

from lipsync_triton import log
from lipsync_triton.errors import LipsyncError
from .model_config import ModelSpec


def tensorrt_available() -> str | None:
    """'trtexec' or 'python' when an engine can be built here, else None."""
    if shutil.which("trtexec"):
        return "trtexec"
    if importlib.util.find_spec("tensorrt") is not None:
        try:
            import tensorrt  # noqa: F401

            return "python"
        except Exception:  # a wheel without a GPU driver fails at import
            return None
    return None


def shape_profile(spec: ModelSpec, dims_override: dict, batch: int) -> dict[str, tuple[int, ...]]:
    return {t.name: (batch, *dims_override.get(t.name, t.dims)) for t in spec.inputs}


def build_engine(onnx_path: Path, plan_path: Path, spec: ModelSpec, dims_override: dict, fp16: bool = True) -> Path:
    """Engine with one optimization profile: min 1, opt = largest preferred batch / 2, max = max_batch_size."""
    how = tensorrt_available()
    if how is None:
        raise LipsyncError("TensorRT is not available here (no trtexec, no tensorrt module); use --profile gpu without --tensorrt")
    lo = shape_profile(spec, dims_override, 1)
    opt = shape_profile(spec, dims_override, max(1, spec.max_batch_size // 2))
    hi = shape_profile(spec, dims_override, spec.max_batch_size)
    if how == "trtexec":
        def fmt(p: dict) -> str:
            return ",".join(f"{n}:{'x'.join(map(str, s))}" for n, s in p.items())

        cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan_path}",
               f"--minShapes={fmt(lo)}", f"--optShapes={fmt(opt)}", f"--maxShapes={fmt(hi)}"]
        if fp16:
            cmd.append("--fp16")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = proc.stdout.strip().splitlines()[-1:] or ["no output"]
            raise LipsyncError(f"trtexec failed for {onnx_path.name}: {tail[0]}")
        return plan_path
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise LipsyncError(f"TensorRT could not parse {onnx_path.name}: {parser.get_error(0)}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name in lo:
        profile.set_shape(name, lo[name], opt[name], hi[name])
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise LipsyncError(f"TensorRT engine build failed for {onnx_path.name}")
    plan_path.write_bytes(bytes(engine))
    log.event("tensorrt_engine", model=spec.name, plan=str(plan_path), fp16=fp16)
    return plan_path
