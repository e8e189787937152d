"""`lipsync perf compare --baseline REV`: the same end-to-end jobs with an earlier commit's client and
with this working tree, alternating on one server, so a change's speed-up is a ratio measured side
by side in one run (these machines drift by 10-20% between runs)."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import tomllib
from pathlib import Path

import psutil

from lipsync_triton import log
from lipsync_triton.errors import LipsyncError
from lipsync_triton.serving.server import TritonServer
from .e2e_bench import generator_ceiling, run_job, server_processes
from .machine import machine_description
from .workload import e2e_workload, ensure_repository, model_inputs

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODES = {"cache_hit": False, "no_cache": True}


def baseline_package(rev: str, dest: Path) -> Path:
    """The `lipsync_triton` package of commit `rev` laid out for PYTHONPATH (its pyproject's package-dir)."""
    src = dest / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", "--format=tar", rev], capture_output=True)
    if archive.returncode != 0:
        raise LipsyncError(f"--baseline {rev}: {archive.stderr.decode(errors='replace').strip() or 'git archive failed'}; "
                           "name a commit of this repository")
    archive_path = dest / "baseline.tar"
    archive_path.write_bytes(archive.stdout)
    with tarfile.open(archive_path) as tar:
        tar.extractall(src, filter="data")
    package_dirs = tomllib.loads((src / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    root = dest / "pkg"
    for package, folder in sorted(package_dirs.items()):
        if package.count(".") <= 1:
            shutil.copytree(src / folder, root / Path(*package.split(".")), dirs_exist_ok=True)
    return root


def _job(pythonpath: Path | None, clip: Path, speech: Path, outfile: Path, url: str, cache_dir: Path, no_cache: bool) -> dict:
    before = os.times()
    job = run_job(clip, speech, outfile, url, cache_dir, not no_cache, pythonpath=pythonpath)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"frames": job["frames"], "frames_per_second": job["frames_per_second"],
            "client_cpu_ms_per_frame": round(1000 * cpu / job["frames"], 1), "output_bytes": outfile.stat().st_size}


def _server_cpu(pid: int) -> float:
    total = 0.0
    for proc in server_processes(pid):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def run_compare(baseline: str, out: Path, repository: Path | None = None, rounds: int = 3, seconds: float = 10.0,
                size: tuple[int, int] = (1280, 720), ceiling_seconds: float = 10.0) -> dict:
    out = out.resolve()  # jobs run from another directory
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    repository = ensure_repository(work, repository)
    inputs = model_inputs(work)["wav2lip"]
    clip, speech = e2e_workload(work / "media", seconds, *size)
    results: dict = {"machine": machine_description(), "baseline": baseline, "seconds_of_video": seconds, "size": list(size),
                     "rounds": []}
    with tempfile.TemporaryDirectory(prefix="lipsync-baseline-") as tmp:
        variants = {"baseline": baseline_package(baseline, Path(tmp)), "current": None}
        with TritonServer(repository, log_path=work / "tritonserver_compare.log") as server:
            for name, path in variants.items():  # presenter caches filled once (each version keys its own)
                _job(path, clip, speech, work / f"compare_{name}.mp4", server.grpc_url, work / "cache_compare", False)
            for round_index in range(rounds):
                ceiling = generator_ceiling(server.grpc_url, inputs, [16], ceiling_seconds)[16]
                row: dict = {"generator_only_per_s": ceiling}
                # Which version runs first alternates: the first job after the ceiling runs measurably
                # faster or slower than the next, and that must not count for either version.
                order = list(variants.items())
                for name, path in order if round_index % 2 == 0 else order[::-1]:
                    for mode, no_cache in MODES.items():
                        start = _server_cpu(server.pid())
                        job = _job(path, clip, speech, work / f"compare_{name}.mp4", server.grpc_url, work / "cache_compare", no_cache)
                        job["server_cpu_ms_per_frame"] = round(1000 * (_server_cpu(server.pid()) - start) / job["frames"], 1)
                        job["efficiency"] = round(job["frames_per_second"] / ceiling, 3)
                        row[f"{name}_{mode}"] = job
                results["rounds"].append(row)
                log.event("compare_round", **{k: v["frames_per_second"] for k, v in row.items() if isinstance(v, dict)})
    results["summary"] = _summary(results["rounds"])
    (out / "compare.json").write_text(json.dumps(results, indent=2) + "\n")
    print(compare_table(results))
    return results


def _summary(rounds: list[dict]) -> dict:
    summary = {}
    for mode in MODES:
        row = {}
        for name in ("baseline", "current"):
            for field in ("frames_per_second", "efficiency", "client_cpu_ms_per_frame", "server_cpu_ms_per_frame", "output_bytes"):
                row[f"{name}_{field}"] = round(statistics.median(r[f"{name}_{mode}"][field] for r in rounds), 3)
        row["ratio"] = round(statistics.median(r[f"current_{mode}"]["frames_per_second"] / r[f"baseline_{mode}"]["frames_per_second"]
                                               for r in rounds), 3)
        summary[mode] = row
    return summary


def compare_table(results: dict) -> str:
    lines = [f"baseline {results['baseline']} vs this tree, {results['seconds_of_video']:g} s {results['size'][0]}x{results['size'][1]} clip, "
             f"{len(results['rounds'])} alternating rounds (medians)", "",
             "| presenter cache | baseline frames/s | current frames/s | ratio | efficiency baseline / current | client CPU ms/frame baseline / current | server CPU ms/frame baseline / current | output bytes baseline / current |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, s in results["summary"].items():
        lines.append(f"| {mode} | {s['baseline_frames_per_second']} | {s['current_frames_per_second']} | **{s['ratio']}** | "
                     f"{s['baseline_efficiency']} / {s['current_efficiency']} | {s['baseline_client_cpu_ms_per_frame']} / "
                     f"{s['current_client_cpu_ms_per_frame']} | {s['baseline_server_cpu_ms_per_frame']} / {s['current_server_cpu_ms_per_frame']} | "
                     f"{s['baseline_output_bytes']} / {s['current_output_bytes']} |")
    return "\n".join(lines)
