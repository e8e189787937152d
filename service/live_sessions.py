"""Live sessions in the API process: a LiveSession (client/live.py) per session, paced in real time
and sent over WebRTC (aiortc), with speech pushed over a WebSocket or from the browser's microphone.

Why aiortc: it is the maintained WebRTC stack for Python (ICE, DTLS-SRTP, VP8/H.264 and Opus
through PyAV, used by fastrtc and the aiortc examples this follows); the session's frames are
numpy arrays already, so a MediaStreamTrack hands them over without another process or a media
server. One clock drives both tracks: slot k's frame has pts k/fps and its audio starts at sample
k * 640, so audio and video leave aligned and cannot drift apart over a long session.
"""
from __future__ import annotations

import asyncio
import collections
import fractions
import functools
import json
import time
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from lipsync_triton import log
from lipsync_triton.client.live import LiveFrame, LivePresenter, LiveSession, is_loud
from lipsync_triton.preprocessing.mel import SAMPLE_RATE
from lipsync_triton.errors import Conflict, InputError, LimitExceeded, NotFound
from .db import new_id
from .settings import Settings

VIDEO_CLOCK = 90000
AUDIO_FRAME_SAMPLES = SAMPLE_RATE // 50  # 20 ms, what Opus packs per packet


class SlotVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, fps: float):
        super().__init__()
        self.queue: asyncio.Queue[LiveFrame] = asyncio.Queue(maxsize=8)
        self.ticks = int(VIDEO_CLOCK / fps)

    async def recv(self) -> av.VideoFrame:
        frame = await self.queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        video = av.VideoFrame.from_ndarray(frame.image, format="yuv420p")
        video.pts, video.time_base = frame.index * self.ticks, fractions.Fraction(1, VIDEO_CLOCK)
        return video


class SlotAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self):
        super().__init__()
        self.queue: asyncio.Queue[tuple[int, np.ndarray] | None] = asyncio.Queue(maxsize=64)

    async def recv(self) -> av.AudioFrame:
        item = await self.queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        start, samples = item
        audio = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        audio.sample_rate, audio.pts, audio.time_base = SAMPLE_RATE, start, fractions.Fraction(1, SAMPLE_RATE)
        return audio


@dataclass
class LiveEntry:
    id: str
    tenant: str
    session: LiveSession
    created: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    pc: RTCPeerConnection | None = None
    video: SlotVideoTrack | None = None
    audio: SlotAudioTrack | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    sent: int = 0
    late: int = 0
    # server-side latency: speech pushed into an idle session (an onset) -> its first generated frame
    # handed to the sender, in ms, for the last 256 onsets
    onset: float | None = None
    latencies_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=256))


class LiveHub:
    """Every live session of this API process, with the limits: sessions per tenant, idle timeout,
    longest session."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.sessions: dict[str, LiveEntry] = {}
        self._pending: dict[str, int] = {}  # tenant -> sessions being created (presenter decoding)
        self._reaper: asyncio.Task | None = None

    def ice_servers(self) -> list[dict]:
        return [{"urls": url} for url in self.settings.live_ice_servers.split(",") if url.strip()]

    def get(self, tenant: str, session_id: str) -> LiveEntry:
        entry = self.sessions.get(session_id)
        if entry is None or entry.tenant != tenant:  # another tenant's session looks like a missing one
            raise NotFound(f"no live session {session_id[:40]}")
        return entry

    def reserve(self, tenant: str) -> None:
        """Count a session being created against the limits (per tenant, and per process: what bounds
        this process's memory) before its presenter is decoded; `release` once it exists or failed.
        Runs on the event loop, so a check and its reservation are one step."""
        mine = sum(e.tenant == tenant for e in self.sessions.values()) + self._pending.get(tenant, 0)
        if mine >= self.settings.live_max_sessions_per_tenant:
            raise LimitExceeded(f"the limit is {self.settings.live_max_sessions_per_tenant} live sessions per tenant; "
                             "end one first (GET /v1/live/sessions lists yours; DELETE /v1/live/sessions/<id> ends one)")
        if len(self.sessions) + sum(self._pending.values()) >= self.settings.live_max_sessions:
            raise LimitExceeded(f"this server runs its limit of {self.settings.live_max_sessions} live sessions "
                             "(LIPSYNC_LIVE_MAX_SESSIONS); try again when one has ended")
        self._pending[tenant] = self._pending.get(tenant, 0) + 1

    def release(self, tenant: str) -> None:
        self._pending[tenant] -= 1
        if not self._pending[tenant]:
            del self._pending[tenant]

    async def create(self, tenant: str, presenter: LivePresenter, pool) -> LiveEntry:
        """The session (its place was reserved by `reserve`)."""
        entry = LiveEntry(new_id(), tenant, LiveSession(presenter, pool, fps=self.settings.live_fps))
        self.sessions[entry.id] = entry
        took = await asyncio.get_running_loop().run_in_executor(None, entry.session.calibrate)
        log.event("live_session_calibrated", session=entry.id, wav2lip_ms=round(1000 * took),
                  delay_ms=round(1000 * entry.session.delay_slots / entry.session.fps))
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        log.event("live_session_started", session=entry.id, tenant=tenant)
        return entry

    async def answer(self, entry: LiveEntry, sdp: str, kind: str) -> dict:
        """The WebRTC answer to a browser's (or any peer's) offer: our video and audio go out; a
        microphone track that comes in is pushed into the session like WebSocket speech."""
        if entry.pc is not None:
            raise Conflict("this live session already has a peer; start another session")
        if kind != "offer" or not sdp.startswith("v=0"):
            raise InputError("send a WebRTC offer: {\"type\": \"offer\", \"sdp\": \"v=0...\"}")
        config = RTCConfiguration([RTCIceServer(**server) for server in self.ice_servers()]) if self.ice_servers() else None
        entry.pc = RTCPeerConnection(config)
        entry.video, entry.audio = SlotVideoTrack(entry.session.fps), SlotAudioTrack()
        entry.pc.addTrack(entry.video)
        entry.pc.addTrack(entry.audio)

        @entry.pc.on("track")
        def on_track(track):
            if track.kind == "audio":
                entry.tasks.append(asyncio.get_running_loop().create_task(self._microphone(entry, track)))

        @entry.pc.on("connectionstatechange")
        async def on_state():
            if entry.pc is not None and entry.pc.connectionState in ("failed", "closed"):
                await self.end(entry.id, reason=f"peer {entry.pc.connectionState}")

        try:
            await entry.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await entry.pc.setLocalDescription(await entry.pc.createAnswer())
        except Exception as exc:  # a malformed SDP: aiortc raises ValueError and friends
            await self.end(entry.id, reason="bad offer")
            raise InputError(f"the WebRTC offer was not understood ({type(exc).__name__}); send the browser's offer SDP") from None
        entry.tasks.append(asyncio.get_running_loop().create_task(self._drive(entry)))
        return {"type": entry.pc.localDescription.type, "sdp": entry.pc.localDescription.sdp}

    def push(self, entry: LiveEntry, pcm: bytes) -> None:
        now = time.monotonic()
        idle = entry.session.queued_seconds == 0 and entry.session.speaking_slots_ahead() == 0
        entry.session.push_pcm(pcm)
        entry.last_activity = now
        if idle and entry.onset is None and is_loud(np.frombuffer(pcm, dtype="<i2"), entry.session.vad_threshold):
            entry.onset = now

    async def end(self, session_id: str, reason: str = "ended") -> None:
        entry = self.sessions.pop(session_id, None)
        if entry is None:
            return
        for task in entry.tasks:
            task.cancel()
        for track in (entry.video, entry.audio):
            if track is not None:
                track.stop()
        if entry.pc is not None:
            await entry.pc.close()
        entry.session.close()
        log.event("live_session_ended", session=session_id, tenant=entry.tenant, reason=reason, frames=entry.sent,
                  late=entry.late, seconds=round(time.monotonic() - entry.created, 1))

    async def close_all(self) -> None:
        for session_id in list(self.sessions):
            await self.end(session_id, reason="server stopping")

    async def _drive(self, entry: LiveEntry) -> None:
        """One frame per slot at real time; a slot that is late is sent at once (and counted). A
        mouth that Wav2Lip has not finished when its slot is due is not waited for (LiveSession)."""
        loop = asyncio.get_running_loop()
        fps, start, upcoming = entry.session.fps, time.monotonic(), 0
        while True:
            frame = await loop.run_in_executor(None, functools.partial(entry.session.next_frame, deadline=start + upcoming / fps))
            upcoming = frame.index + 1
            due = start + frame.index / fps
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0 / fps:
                entry.late += 1
            await entry.video.queue.put(frame)
            if frame.generated > 0 and entry.onset is not None:
                entry.latencies_ms.append(round(1000 * (time.monotonic() - entry.onset), 1))
                entry.onset = None
            for at in range(0, len(frame.audio), AUDIO_FRAME_SAMPLES):
                await entry.audio.queue.put((frame.index * len(frame.audio) + at, frame.audio[at:at + AUDIO_FRAME_SAMPLES]))
            entry.sent += 1

    async def _microphone(self, entry: LiveEntry, track) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            while True:
                frame = await track.recv()
                for out in resampler.resample(frame):
                    self.push(entry, out.to_ndarray().reshape(-1).astype("<i2").tobytes())
        except MediaStreamError:
            return

    async def _reap(self) -> None:
        """End sessions idle past LIPSYNC_LIVE_IDLE_TIMEOUT_S or older than LIPSYNC_LIVE_MAX_SESSION_S."""
        while self.sessions:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for entry in list(self.sessions.values()):
                if now - entry.created > self.settings.live_max_session_s:
                    await self.end(entry.id, reason="longest session reached")
                elif entry.pc is None and now - entry.last_activity > self.settings.live_idle_timeout_s:
                    await self.end(entry.id, reason="no peer connected")


def control_message(text: str) -> str:
    """A WebSocket text message: {"type": "interrupt"} or {"type": "end"}; anything else is refused."""
    try:
        kind = json.loads(text).get("type")
    except (ValueError, AttributeError):
        kind = None
    if kind not in ("interrupt", "end"):
        raise InputError('control messages are JSON: {"type": "interrupt"} or {"type": "end"}')
    return kind
