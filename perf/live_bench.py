"""`lipsync perf live`: live sessions measured from outside, as a browser would meet them.

A loopback WebRTC client (aiortc) per session receives the presenter; speech bursts are pushed over
the WebSocket in 20 ms chunks at real time after silence. Latency = wall time from sending a
burst's first chunk to receiving the first frame whose picture is not one of the presenter's own
idle frames (recorded during the silence before; with random weights the generated mouth still
differs from the presenter's pixels). The server's own part (speech in -> generated frame handed to
the sender) comes from the session's `onset_latency_ms`. A/V offset, also at the receiver: the
arrival of a burst's first generated frame minus the arrival of its first loud audio frame; its
change from the first bursts to the last is the drift a long session would show. `--sessions N`
runs 1..N concurrent sessions and reports the largest count whose p95 stays within the goal.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx
import numpy as np

GOAL_P95_MS = 450.0
CHUNK = 320  # 20 ms at 16 kHz
LOUD = 300.0  # mean |sample| of a received 20 ms audio frame that carries speech (silence decodes to ~0)


def _signature(gray: np.ndarray) -> np.ndarray:
    """16x16-pixel block means: robust to the video codec's noise, sensitive to a changed mouth."""
    h, w = (gray.shape[0] // 16) * 16, (gray.shape[1] // 16) * 16
    return gray[:h, :w].reshape(h // 16, 16, w // 16, 16).mean(axis=(1, 3))


def _differs(sig: np.ndarray, idle: list[np.ndarray], threshold: float) -> bool:
    return min(float(np.abs(sig - ref).max()) for ref in idle) > threshold


async def _session(api: str, key: str | None, face: Path, speech: np.ndarray, onsets: int, threshold: float) -> dict:
    import websockets
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=120) as http:
        with open(face, "rb") as f:
            created = await http.post("/v1/live/sessions", files={"face": (face.name, f)})
        created.raise_for_status()
        session = created.json()
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        frames: list[tuple[float, np.ndarray]] = []
        sounds: list[tuple[float, float]] = []  # (arrival, mean |sample|) of each received audio frame

        @pc.on("track")
        def on_track(track):
            async def pull():
                try:
                    while True:
                        frame = await track.recv()
                        if track.kind == "video":
                            frames.append((time.monotonic(), _signature(frame.to_ndarray(format="gray").astype(np.float32))))
                        else:
                            sounds.append((time.monotonic(), float(np.abs(frame.to_ndarray().astype(np.float32)).mean())))
                except MediaStreamError:
                    return
            asyncio.ensure_future(pull())

        await pc.setLocalDescription(await pc.createOffer())
        answer = (await http.post(session["links"]["offer"], json={"type": "offer", "sdp": pc.localDescription.sdp})).json()
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        url = api.replace("http", "ws", 1) + session["links"]["audio"]
        latencies, offsets = [], []
        async with websockets.connect(url, additional_headers=headers) as ws:
            await asyncio.sleep(4.0)  # silence: the presenter's own frames, a whole ping-pong period
            idle = [sig for _, sig in frames[-100:]]
            for _ in range(onsets):
                start = time.monotonic()
                for at in range(0, len(speech), CHUNK):  # a TTS streaming at real time
                    await ws.send(speech[at:at + CHUNK].tobytes())
                    await asyncio.sleep(max(0.0, start + (at + CHUNK) / 16000 - time.monotonic()))
                await asyncio.sleep(2.0)  # back to idle before the next onset
                seen = [t for t, sig in frames if t >= start and _differs(sig, idle, threshold)]
                heard = [t for t, level in sounds if t >= start and level > LOUD]
                latencies.append(round(1000 * (seen[0] - start), 1) if seen else None)
                offsets.append(round(1000 * (seen[0] - heard[0]), 1) if seen and heard else None)
        state = (await http.get(session["links"]["self"])).json()
        await pc.close()
        await http.delete(session["links"]["self"])
    return {"latencies_ms": latencies, "server_ms": state.get("onset_latency_ms", []), "frames_sent": state["frames_sent"],
            "frames_late": state["frames_late"], "frames_held": state.get("frames_held", 0), "delay_ms": state.get("delay_ms"),
            "frames_generated": state.get("frames_generated", 0), "frames_received": len(frames), "av_offsets_ms": offsets}


def _drift(offsets: list[float | None]) -> dict:
    """A/V offset (video minus audio, at the receiver) over the first and the last bursts (median of
    up to 3 each): a constant offset is the gate's and the cross-fade's; a change is drift."""
    known = [v for v in offsets if v is not None]
    if not known:
        return {"av_offset_start_ms": None, "av_offset_end_ms": None, "av_drift_ms": None}
    head, tail = statistics.median(known[:3]), statistics.median(known[-3:])
    return {"av_offset_start_ms": round(head, 1), "av_offset_end_ms": round(tail, 1), "av_drift_ms": round(tail - head, 1)}


def _pct(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v is not None)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1) if values else None


def run_live_bench(api: str, key: str | None, out: Path, sessions: int = 1, onsets: int = 10, size: str = "512x512",
                   threshold: float = 6.0) -> dict:
    from lipsync_triton.client.live import pcm16
    from lipsync_triton.preprocessing.audio import load_audio
    from lipsync_triton.samples import write_presenter_clip, write_speech
    from .machine import machine_description

    work = out / "work" / "live"
    work.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in size.lower().split("x"))
    face = write_presenter_clip(work / f"presenter_{width}x{height}.mp4", 1.0, width=width, height=height)
    speech = pcm16(load_audio(write_speech(work / "burst.wav", "One two three, four five.")))
    rows = []
    for n in range(1, sessions + 1):
        async def all_sessions():
            return await asyncio.gather(*(_session(api, key, face, speech, onsets, threshold) for _ in range(n)))
        results = asyncio.run(all_sessions())
        client = [v for r in results for v in r["latencies_ms"]]
        server = [v for r in results for v in r["server_ms"]]
        row = {"sessions": n, "size": size, "onsets": len(client), "missed": sum(v is None for v in client),
               "latency_p50_ms": _pct(client, 0.5), "latency_p95_ms": _pct(client, 0.95),
               "server_p50_ms": _pct(server, 0.5), "server_p95_ms": _pct(server, 0.95),
               "frames_sent": sum(r["frames_sent"] for r in results), "frames_late": sum(r["frames_late"] for r in results),
               "frames_generated": sum(r["frames_generated"] for r in results), "frames_held": sum(r["frames_held"] for r in results),
               "delay_ms": max((r["delay_ms"] or 0) for r in results),
               **_drift(results[0]["av_offsets_ms"])}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if row["latency_p95_ms"] is None or row["latency_p95_ms"] > GOAL_P95_MS:
            break
    within = [r["sessions"] for r in rows if r["latency_p95_ms"] is not None and r["latency_p95_ms"] <= GOAL_P95_MS]
    report = {"machine": machine_description(), "api": api, "rows": rows, "max_sessions_within_goal": max(within, default=0),
              "mean_server_ms": statistics.fmean([r["server_p50_ms"] for r in rows if r["server_p50_ms"]] or [0])}
    out.mkdir(parents=True, exist_ok=True)
    (out / "live_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
