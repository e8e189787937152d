"""perf_analyzer (shipped by the tritonclient 2.51.0 wheel) located, run and parsed."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lipsync_triton.errors import LipsyncError


@dataclass
class SweepPoint:
    concurrency: int
    throughput: float  # inferences (frames) per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    queue_ms: float
    compute_ms: float


def perf_analyzer_command() -> tuple[str, dict]:
    import os

    binary = Path(sys.prefix) / "bin" / "perf_analyzer"
    if not binary.exists():
        found = shutil.which("perf_analyzer")
        if not found:
            raise LipsyncError("perf_analyzer not found: run `make setup` (tritonclient==2.51.0 ships it)")
        binary = Path(found)
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime as cuda_runtime  # libcudart.so.12, which perf_analyzer links

        lib = Path(list(cuda_runtime.__path__)[0]) / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
    except ImportError:
        raise LipsyncError("libcudart.so.12 missing for perf_analyzer: pip install nvidia-cuda-runtime-cu12 (make setup does)") from None
    return str(binary), env


def run_sweep(url: str, model: str, batch: int, concurrency: list[int], input_data: Path, csv_path: Path,
              measurement_ms: int = 4000, max_trials: int = 6, shared_memory: str = "none",
              stability_pct: int = 40, request_count: int = 0) -> list[SweepPoint]:
    """One perf_analyzer run per concurrency level (levels such as 1,2,4,8 are not a linear range);
    the per-level CSVs are merged into `csv_path`.

    `request_count` > 0 measures a fixed number of requests per level instead of windows that must
    agree within `stability_pct`: a smoke run on a loaded machine then cannot fail for noise."""
    binary, env = perf_analyzer_command()
    header, rows = None, []
    for level in concurrency:
        level_csv = csv_path.with_name(f"{csv_path.stem}.c{level}.csv")
        cmd = [
            binary, "-m", model, "-i", "grpc", "-u", url, "-b", str(batch),
            "--concurrency-range", f"{level}:{level}", "--input-data", str(input_data), "-f", str(level_csv),
            "--shared-memory", shared_memory,
        ]
        if request_count:
            cmd += ["--request-count", str(request_count * level)]
        else:
            cmd += ["-p", str(measurement_ms), "-r", str(max_trials), "-s", str(stability_pct)]
        if shared_memory != "none":
            cmd += ["--output-shared-memory-size", str(4 << 20)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise LipsyncError(f"perf_analyzer failed on {model} at concurrency {level}: {' | '.join(tail)}")
        lines = level_csv.read_text().strip().splitlines()
        header = lines[0]
        rows += lines[1:]
        level_csv.unlink()
    csv_path.write_text("\n".join([header, *rows]) + "\n")
    return parse_csv(csv_path)


def parse_csv(path: Path) -> list[SweepPoint]:
    points = []
    with open(path) as fh:
        for row in csv.DictReader(fh):
            points.append(SweepPoint(
                concurrency=int(row["Concurrency"]), throughput=float(row["Inferences/Second"]),
                p50_ms=float(row["p50 latency"]) / 1000, p95_ms=float(row["p95 latency"]) / 1000,
                p99_ms=float(row["p99 latency"]) / 1000, queue_ms=float(row["Server Queue"]) / 1000,
                compute_ms=float(row["Server Compute Infer"]) / 1000,
            ))
    return points
