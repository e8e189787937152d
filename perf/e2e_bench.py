"""`lipsync perf e2e`: the real pipeline on a standard 720p 25 fps workload, against the
generator-only ceiling measured in the same run; stage split, cache on/off, peak memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from lipsync_triton import log
from lipsync_triton.client.generate import GenerateOptions
from lipsync_triton.client.triton_client import WAV2LIP_MODEL, TritonPool
from lipsync_triton.errors import LipsyncError
from lipsync_triton.serving.server import TritonServer
from .inprocess import stack_batch
from .e2e_worker import peak_rss_mb
from .machine import machine_description
from .workload import e2e_workload, ensure_repository, lecture_workload, model_inputs, variant_repository

FULL = {"seconds": [10.0, 20.0, 60.0], "size": (1280, 720), "ceiling_batches": [16, 32], "ceiling_s": 15.0,
        "lecture_minutes": [1.0, 30.0]}
TINY = {"seconds": [1.0, 2.0], "size": (320, 192), "ceiling_batches": [4], "ceiling_s": 0.5, "lecture_minutes": [0.05, 0.1]}
# A lecture on a still photo at 2 output frames/s: all of its minutes of speech are decoded and
# turned into mel (what grows with audio length), while the generator runs 1/12.5 of a 25 fps job.
LECTURE_FPS = 2.0


def generator_ceiling(url: str, inputs: list[dict], batches: list[int], seconds: float, in_flight: int = 2) -> dict:
    """Wav2Lip alone over gRPC (no decode, detect, paste or encode): frames/s at each batch size."""
    pool = TritonPool(url)
    rates = {}
    for batch in batches:
        arrays = stack_batch(inputs, batch)
        pool.infer(WAV2LIP_MODEL, arrays, ["face_out"])  # warm
        done, start = 0, time.perf_counter()
        with ThreadPoolExecutor(in_flight) as ex:
            while time.perf_counter() - start < seconds or done == 0:
                list(ex.map(lambda _: pool.infer(WAV2LIP_MODEL, arrays, ["face_out"]), range(in_flight)))
                done += batch * in_flight
        rates[batch] = round(done / (time.perf_counter() - start), 2)
    return rates


def run_job(face: Path, audio: Path, outfile: Path, url: str, cache_dir: Path, use_cache: bool, fps: float = 25.0,
            detect_every: int | None = None, keyframe_every: int | None = None, pythonpath: Path | None = None) -> dict:
    """One job in its own process (its peak RSS is its own); `pythonpath` runs another checkout's
    package instead of this one (from the cache's folder, so nothing of this tree is imported)."""
    cmd = [sys.executable, "-m", "lipsync_triton.perf.e2e_worker", "--face", str(face), "--audio", str(audio),
           "--outfile", str(outfile), "--url", url, "--cache-dir", str(cache_dir), "--fps", str(fps)]
    if detect_every:
        cmd += ["--detect-every", str(detect_every)]
    if keyframe_every is not None:
        cmd += ["--keyframe-every", str(keyframe_every)]
    if not use_cache:
        cmd.append("--no-cache")
    env = None if pythonpath is None else {**os.environ, "PYTHONPATH": str(pythonpath)}
    cwd = None if pythonpath is None else cache_dir.parent
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        raise LipsyncError(f"e2e job failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def server_processes(pid: int) -> list[psutil.Process]:
    """tritonserver and its Python-backend stub processes."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def server_peak_rss_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of tritonserver plus its Python-backend stub processes."""
    total = 0.0
    for p in server_processes(pid):
        try:
            total += peak_rss_mb(p.pid)
        except OSError:
            pass
    return round(total, 1)


def run_e2e_bench(out: Path, repository: Path | None = None, tiny: bool = False, seconds: list[float] | None = None,
                  lecture_minutes: list[float] | None = None) -> dict:
    plan = dict(TINY if tiny else FULL)
    if seconds:
        plan["seconds"] = seconds
    if lecture_minutes:
        plan["lecture_minutes"] = lecture_minutes
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    repository = ensure_repository(work, repository)
    inputs = model_inputs(work)["wav2lip"]
    width, height = plan["size"]
    results: dict = {"machine": machine_description(), "mode": "tiny" if tiny else "full",
                     "workload": f"{width}x{height} 25 fps presenter clip + espeak-ng speech of equal length",
                     "size": [width, height], "runs": []}
    with TritonServer(repository, log_path=work / "tritonserver.log") as server:
        ceiling = generator_ceiling(server.grpc_url, inputs, plan["ceiling_batches"], plan["ceiling_s"])
        results["generator_only_per_s"] = ceiling
        best = max(ceiling.values())
        for secs in plan["seconds"]:
            clip, speech = e2e_workload(work / "media", secs, width, height)
            cache_dir = work / f"cache_{secs:g}"
            for use_cache in (False, True):
                if not use_cache:
                    for f in cache_dir.glob("*.npz"):
                        f.unlink()
                # first run (cache off) fills nothing; the cached run needs boxes stored once
                job = run_job(clip, speech, work / f"out_{secs:g}.mp4", server.grpc_url, cache_dir, use_cache)
                if use_cache and not job["cache_hit"]:  # first cached run stores the boxes; measure the hit
                    job = run_job(clip, speech, work / f"out_{secs:g}.mp4", server.grpc_url, cache_dir, use_cache)
                job.update({"seconds_of_video": secs, "presenter_cache": use_cache,
                            "real_time_factor": round(job["seconds"] / secs, 3),
                            "pipeline_efficiency": round(job["frames_per_second"] / best, 3)})
                results["runs"].append(job)
                log.event("e2e", seconds=secs, cache=use_cache, fps=job["frames_per_second"],
                          efficiency=job["pipeline_efficiency"], client_rss_mb=job["client_peak_rss_mb"])
        results["detect_stride"] = detect_stride_comparison(results, server.grpc_url, work, best)
        results["lectures"] = []
        for minutes in plan["lecture_minutes"]:
            photo, speech = lecture_workload(work / "media", minutes)
            job = run_job(photo, speech, work / "lecture.mp4", server.grpc_url, work / "cache_lecture", True, LECTURE_FPS)
            results["lectures"].append({"minutes": minutes, "fps": LECTURE_FPS, "frames": job["frames"], "seconds": job["seconds"],
                                        "client_peak_rss_mb": job["client_peak_rss_mb"]})
            log.event("e2e_lecture", minutes=minutes, frames=job["frames"], client_rss_mb=job["client_peak_rss_mb"])
        results["server_peak_rss_mb"] = server_peak_rss_mb(server.pid())
    results["runtime_comparison"] = compare_runtime_e2e(results, repository, work)
    lo, hi = min(plan["seconds"]), max(plan["seconds"])
    rss = {r["seconds_of_video"]: r["client_peak_rss_mb"] for r in results["runs"] if not r["presenter_cache"]}
    results["client_rss_ratio"] = {"long_s": hi, "short_s": lo, "ratio": round(rss[hi] / rss[lo], 3)}
    short, long = results["lectures"][0], results["lectures"][-1]
    results["lecture_rss_ratio"] = {"long_min": long["minutes"], "short_min": short["minutes"],
                                    "ratio": round(long["client_peak_rss_mb"] / short["client_peak_rss_mb"], 3)}
    (out / "e2e.json").write_text(json.dumps(results, indent=2) + "\n")
    print(e2e_table(results))
    return results


def detect_stride_comparison(results: dict, url: str, work: Path, ceiling: float) -> dict:
    """The shortest clip without the cache again, detecting every frame (the reference's way) and
    every 2nd frame without keyframes (the previous default): the default's no-cache efficiency
    against both, in the same run."""
    first = next(r for r in results["runs"] if not r["presenter_cache"])
    secs = first["seconds_of_video"]
    clip, speech = e2e_workload(work / "media", secs, *results["size"])
    every = run_job(clip, speech, work / "out_every_frame.mp4", url, work / "cache_every_frame", False, detect_every=1, keyframe_every=0)
    second = run_job(clip, speech, work / "out_every_2nd.mp4", url, work / "cache_every_2nd", False, detect_every=2, keyframe_every=0)
    return {"seconds_of_video": secs, "default_stride_per_s": first["frames_per_second"],
            "default_detector_requests": first["detector_requests"],
            "every_frame_per_s": every["frames_per_second"], "every_frame_efficiency": round(every["frames_per_second"] / ceiling, 3),
            "every_2nd_per_s": second["frames_per_second"], "every_2nd_efficiency": round(second["frames_per_second"] / ceiling, 3),
            "ratio": round(first["frames_per_second"] / every["frames_per_second"], 3),
            "ratio_every_2nd": round(first["frames_per_second"] / second["frames_per_second"], 3)}


def compare_runtime_e2e(results: dict, repository: Path, work: Path) -> dict:
    """The shortest clip's cache-hit job again, on the same models served by ONNX Runtime: the
    end-to-end ratio of the repository's own runtime against it, in the same run."""
    first = next(r for r in results["runs"] if r["presenter_cache"])
    secs = first["seconds_of_video"]
    clip, speech = e2e_workload(work / "media", secs, *results["size"])
    variant = variant_repository(repository, work / "model_repository_onnxruntime", cpu_runtime="onnxruntime")
    with TritonServer(variant, log_path=work / "tritonserver_onnxruntime.log") as server:
        job = run_job(clip, speech, work / "out_onnxruntime.mp4", server.grpc_url, work / f"cache_{secs:g}", True)
    return {"seconds_of_video": secs, "repository_per_s": first["frames_per_second"], "onnxruntime_per_s": job["frames_per_second"],
            "ratio": round(first["frames_per_second"] / job["frames_per_second"], 3)}


def e2e_table(results: dict) -> str:
    lines = [f"generator-only ceiling (frames/s by batch): {results['generator_only_per_s']}", "",
             "| video s | presenter cache | frames/s | real-time factor | efficiency | decode | mel | detect | generate | paste | encode | client peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        s = r["stages"]
        lines.append(f"| {r['seconds_of_video']:g} | {'hit' if r['presenter_cache'] else 'off'} | {r['frames_per_second']} | "
                     f"{r['real_time_factor']} | {r['pipeline_efficiency']} | {s['decode']} | {s['mel']} | {s['detect']} | "
                     f"{s['generate']} | {s['paste']} | {s['encode']} | {r['client_peak_rss_mb']} |")
    ratio = results["client_rss_ratio"]
    lines += ["", f"server peak RSS (tritonserver + stubs): {results['server_peak_rss_mb']} MB",
              f"client peak RSS {ratio['long_s']:g} s / {ratio['short_s']:g} s: {ratio['ratio']}", "",
              "| lecture on a still photo (min of stereo mp3 speech) | output frames | seconds | client peak RSS MB |", "|---|---|---|---|"]
    lines += [f"| {r['minutes']:g} | {r['frames']} | {r['seconds']} | {r['client_peak_rss_mb']} |" for r in results["lectures"]]
    lecture = results["lecture_rss_ratio"]
    lines += [f"client peak RSS lecture {lecture['long_min']:g} min / {lecture['short_min']:g} min: {lecture['ratio']}"]
    ds = results["detect_stride"]
    lines += ["", f"{ds['seconds_of_video']:g} s clip, no cache: keyframes every {GenerateOptions.keyframe_every} frames, refined to every "
              f"{GenerateOptions.detect_every} where the face moved, {ds['default_stride_per_s']} frames/s vs every frame {ds['every_frame_per_s']} "
              f"(efficiency {ds['every_frame_efficiency']}): ratio {ds['ratio']}; vs every 2nd frame {ds['every_2nd_per_s']} "
              f"(efficiency {ds['every_2nd_efficiency']}): ratio {ds['ratio_every_2nd']}"]
    rc = results["runtime_comparison"]
    lines += ["", f"{rc['seconds_of_video']:g} s clip, cache hit: this repository {rc['repository_per_s']} frames/s vs the same models on "
              f"ONNX Runtime {rc['onnxruntime_per_s']} frames/s: ratio {rc['ratio']}"]
    return "\n".join(lines)
