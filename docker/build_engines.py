"""Entry point of the GPU Triton image: TensorRT engines for THIS GPU, then tritonserver.

MODEL_SOURCE is a repository exported with `lipsync export --profile gpu` (model.onnx +
config.pbtxt + config.tensorrt_plan.pbtxt per model). For each model the engine is built into
ENGINE_CACHE with ONE optimization profile from batch 1 to the config's max_batch_size (so the
dynamic batcher never triggers a rebuild), keyed on everything it depends on: the ONNX content, the
builder's arguments (input shapes from the config, so a new detector size or max_batch_size gets a
new engine; precision and flags), the device (GPU name, and the MIG profile when the pod has a MIG
slice) and the TensorRT version. Builds run under a file lock (replicas on one node share the cache
and build once), write a temporary name and rename it; partial files of a build that was killed
are removed. `--build-only` builds and exits (an initContainer or a one-off Job, with its own
timeout, so a slow build never counts against tritonserver's startup probe). Then the repository Triton serves is assembled in /tmp (configs copied, engines linked)
and tritonserver replaces this process (exec: signals reach it, logs stay on stdout).

Standard library only: the NVIDIA image's Python is its own, not the project's environment.
A MODEL_SOURCE URL (s3://...) is passed to Triton as it is: engines must be in it already.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TRTEXEC = shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec"
PLAN_CONFIG = "config.tensorrt_plan.pbtxt"
RUNTIME_REPOSITORY = Path("/tmp/lipsync-models")


def log(event: str, **fields) -> None:
    print(" ".join([f"event={event}"] + [f"{k}={v}" for k, v in fields.items()]), flush=True)


def gpu_name() -> str:
    """The device an engine is built for: the GPU's name, plus the MIG profile (e.g. 3g.40gb) when
    this pod sees a MIG slice (an engine tuned on one slice size is not the one for another)."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        listing = ""
    gpu = re.search(r"^GPU \d+: (.+?) \(UUID", listing, re.M)
    mig = re.search(r"^\s+MIG (\S+)\s+Device", listing, re.M)
    out = (gpu.group(1) if gpu else "unknown-gpu") + (f"-mig-{mig.group(1)}" if mig else "")
    return re.sub(r"[^A-Za-z0-9]+", "-", out).strip("-").lower()


def tensorrt_version() -> str:
    try:
        out = subprocess.run([TRTEXEC, "--help"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    match = re.search(r"TensorRT v(\d+)", out)
    return match.group(1) if match else "unknown"


def shapes(config: str, batch: int) -> str:
    """'name:BxD1xD2,...' for every input of a config.pbtxt."""
    found = re.findall(r'input\s*\{[^}]*?name:\s*"([^"]+)"[^}]*?dims:\s*\[([^\]]*)\]', config, re.S)
    return ",".join(f"{name}:{batch}x" + "x".join(d.strip() for d in dims.split(",")) for name, dims in found)


def builder_args(plan_config: str) -> list[str]:
    """trtexec's arguments besides the files: precision and the batch profile from the config."""
    max_batch = int(re.search(r"max_batch_size:\s*(\d+)", plan_config).group(1))
    return ["--fp16", f"--minShapes={shapes(plan_config, 1)}", f"--optShapes={shapes(plan_config, max(1, max_batch // 2))}",
            f"--maxShapes={shapes(plan_config, max_batch)}"]


def build(model_dir: Path, cache: Path, gpu: str, trt: str) -> Path:
    onnx = model_dir / "1" / "model.onnx"
    args = builder_args((model_dir / PLAN_CONFIG).read_text())
    key = hashlib.sha256(onnx.read_bytes())
    key.update("\0".join([*args, gpu, trt]).encode())
    engine = cache / f"{model_dir.name}-{key.hexdigest()[:20]}-{gpu}-trt{trt}.plan"
    with open(cache / f"{model_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second replica waits here, then finds the engine
        for stale in cache.glob(f"{model_dir.name}-*.partial-*"):  # a build killed mid-way (none runs: we hold the lock)
            stale.unlink(missing_ok=True)
            log("engine_partial_removed", file=stale.name)
        if engine.exists():
            log("engine_cached", model=model_dir.name, engine=engine.name)
            return engine
        tmp = engine.with_suffix(f".partial-{os.getpid()}")
        cmd = [TRTEXEC, f"--onnx={onnx}", f"--saveEngine={tmp}", *args]
        log("engine_build", model=model_dir.name, args=" ".join(args), gpu=gpu)
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            tail = (done.stdout.strip().splitlines() or ["no output"])[-1]
            sys.exit(f"error: TensorRT engine build failed for {model_dir.name}: {tail}")
        tmp.replace(engine)
        log("engine_built", model=model_dir.name, engine=engine.name)
        return engine


def assemble(source: Path, cache: Path) -> Path:
    gpu, trt = gpu_name(), tensorrt_version()
    shutil.rmtree(RUNTIME_REPOSITORY, ignore_errors=True)
    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
        target = RUNTIME_REPOSITORY / model_dir.name
        if (model_dir / PLAN_CONFIG).is_file() and (model_dir / "1" / "model.onnx").is_file():
            engine = build(model_dir, cache, gpu, trt)
            (target / "1").mkdir(parents=True)
            shutil.copyfile(model_dir / PLAN_CONFIG, target / "config.pbtxt")
            (target / "1" / "model.plan").symlink_to(engine)
        else:  # served as exported (e.g. the onnxruntime profile)
            shutil.copytree(model_dir, target, symlinks=True)
    return RUNTIME_REPOSITORY


def main(argv: list[str]) -> None:
    command = argv[argv.index("--") + 1:] if "--" in argv else ["tritonserver"]
    source = os.environ.get("MODEL_SOURCE", "/models")
    if "://" in source:
        repository = source
    else:
        cache = Path(os.environ.get("ENGINE_CACHE", "/engine-cache"))
        cache.mkdir(parents=True, exist_ok=True)
        repository = str(assemble(Path(source), cache))
    if "--build-only" in argv[:argv.index("--") if "--" in argv else len(argv)]:
        log("engines_ready", repository=repository)
        return
    os.execvp(command[0], [*command, f"--model-repository={repository}"])


if __name__ == "__main__":
    main(sys.argv[1:])
