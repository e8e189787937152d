"""`lipsync perf service`: many concurrent clients against a running job service. Each client
submits jobs and polls them to a final state; the report gives API latency (p50/p99 of submits and
polls), requests/s, jobs completed per second, and whether any job was lost or duplicated (every
submitted id must appear exactly once in the tenant's list, in a final state)."""
from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lipsync_triton.service.db import FINAL


@dataclass
class Tally:
    submit_ms: list[float] = field(default_factory=list)
    poll_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def _client(http: httpx.AsyncClient, face: bytes, audio: bytes, jobs: int, tally: Tally, deadline: float) -> None:
    for _ in range(jobs):
        start = time.perf_counter()
        response = await http.post("/v1/jobs", files={"face": ("face.mp4", face), "audio": ("speech.wav", audio)})
        tally.submit_ms.append((time.perf_counter() - start) * 1000)
        if response.status_code != 202:
            tally.errors.append(f"submit {response.status_code}: {response.text[:120]}")
            continue
        job_id = response.json()["id"]
        tally.ids.append(job_id)
        status = "queued"
        while status not in FINAL and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            start = time.perf_counter()
            view = await http.get(f"/v1/jobs/{job_id}")
            tally.poll_ms.append((time.perf_counter() - start) * 1000)
            status = view.json()["status"] if view.status_code == 200 else f"http {view.status_code}"
        tally.states[job_id] = status


async def _load(base: str, key: str | None, face: bytes, audio: bytes, clients: int, jobs: int, tally: Tally, deadline: float) -> None:
    """Every client on one event loop (asyncio): the load generator's own CPU stays small, so on a
    shared machine it crowds the server it measures less than a thread per client would."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    sessions = [httpx.AsyncClient(base_url=base, headers=headers, timeout=120) for _ in range(clients)]
    try:
        await asyncio.gather(*(_client(http, face, audio, jobs, tally, deadline) for http in sessions))
    finally:
        await asyncio.gather(*(http.aclose() for http in sessions))


def run_service_load(base: str, key: str | None, face: Path, audio: Path, clients: int = 50, jobs_per_client: int = 1,
                     timeout_s: float = 900.0, out: Path | None = None) -> dict:
    tally = Tally()
    face_bytes, audio_bytes = face.read_bytes(), audio.read_bytes()
    started = time.monotonic()
    asyncio.run(_load(base, key, face_bytes, audio_bytes, clients, jobs_per_client, tally, started + timeout_s))
    wall = time.monotonic() - started
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    listed: list[str] = []
    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
        offset = 0
        while True:
            page = http.get("/v1/jobs", params={"limit": 200, "offset": offset}).json()
            listed += [j["id"] for j in page["jobs"]]
            offset += len(page["jobs"])
            if not page["jobs"] or offset >= page["total"]:
                break
    submitted = set(tally.ids)
    in_list = [i for i in listed if i in submitted]
    counts: dict[str, int] = {}
    for state in tally.states.values():
        counts[state] = counts.get(state, 0) + 1
    report = {
        "clients": clients, "jobs_submitted": len(tally.ids), "submit_errors": len(tally.errors), "wall_s": round(wall, 1),
        "final_states": counts, "jobs_per_s": round(counts.get("succeeded", 0) / wall, 3),
        "api_requests": len(tally.submit_ms) + len(tally.poll_ms),
        "api_requests_per_s": round((len(tally.submit_ms) + len(tally.poll_ms)) / wall, 1),
        "submit_ms_p50": _percentile(tally.submit_ms, 0.5), "submit_ms_p99": _percentile(tally.submit_ms, 0.99),
        "poll_ms_p50": _percentile(tally.poll_ms, 0.5), "poll_ms_p99": _percentile(tally.poll_ms, 0.99),
        "lost": len(submitted - set(in_list)), "duplicated": len(in_list) - len(set(in_list)),
        "not_final": sum(1 for s in tally.states.values() if s not in FINAL), "errors": tally.errors[:5],
        "mean_poll_ms": round(statistics.fmean(tally.poll_ms), 1) if tally.poll_ms else 0.0,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "service_load.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_service_bench(base: str, key: str | None, out: Path, clients: int, jobs_per_client: int, seconds: float) -> dict:
    """The CLI entry: a short presenter clip and speech (so the API, queue and database are what is
    loaded, not the generator), then the load, a report and `out/service_load.json`."""
    from .machine import machine_description
    from .workload import e2e_workload

    face, audio = e2e_workload(out / "work" / "media", seconds, 320, 192)
    report = run_service_load(base, key, face, audio, clients, jobs_per_client, out=None)
    report = {"machine": machine_description(), "service": base, "clip_s": seconds, **report}
    out.mkdir(parents=True, exist_ok=True)
    (out / "service_load.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| clients | jobs | wall s | succeeded | jobs/s | API req/s | submit p50/p99 ms | poll p50/p99 ms | lost | duplicated |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {report['clients']} | {report['jobs_submitted']} | {report['wall_s']} | {report['final_states'].get('succeeded', 0)} | "
          f"{report['jobs_per_s']} | {report['api_requests_per_s']} | {report['submit_ms_p50']}/{report['submit_ms_p99']} | "
          f"{report['poll_ms_p50']}/{report['poll_ms_p99']} | {report['lost']} | {report['duplicated']} |")
    return report
