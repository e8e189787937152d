"""/v1/live: live sessions (a presenter speaking in real time over WebRTC), speech pushed over a
WebSocket or from the browser's microphone; /live: the page."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from lipsync_triton.client.live import LIVE_PRIORITY, LivePresenter, pcm16
from lipsync_triton.client.triton_client import TritonPool
from lipsync_triton.errors import InputError, LipsyncError, Unavailable
from .db import session_scope
from .deps import Svc, Tenant, tenant_of
from .live_sessions import LiveHub, control_message
from .presenters import tenant_presenter, usable
from .uploads import save
from .user_errors import reworded, tenant_message
from .worker_context import context_for

router = APIRouter(tags=["live"])
PAGE = Path(__file__).with_name("static") / "live.html"
SAY_MAX_CHARS = 2000
SAY_TIMEOUT_S = 20.0  # espeak-ng speaks 2000 characters in well under a second of CPU


async def hub(request: Request) -> LiveHub:  # async: no thread-pool hop (deps.py)
    return request.app.state.live


Hub = Annotated[LiveHub, Depends(hub)]


def _prepare(svc, who: str, presenter_id: str | None, face: UploadFile | None, pool: TritonPool) -> LivePresenter:
    """The presenter's frames, boxes and crops (blocking: decode + face tracking through Triton)."""
    settings = svc.settings
    context = context_for(settings)
    with context.work_dir("live-") as work:
        if presenter_id:
            with session_scope(settings.database) as s:
                found = usable(tenant_presenter(s, who, presenter_id))
                name, key = found.name, found.face_key
            svc.storage.get_file(key, work / "face")
        elif face is not None:
            name = face.filename or "presenter"
            save(face, work / "face")
        else:
            raise InputError("send a presenter_id or a face upload")
        try:  # the session's own pool decides retries (live never waits for a server)
            return LivePresenter.load(work / "face", pool, context.generate_options(), max_seconds=settings.live_presenter_seconds,
                                      fps=settings.live_fps, max_pixels=settings.live_max_frame_pixels,
                                      budget_bytes=int(settings.live_presenter_mb * 2**20))
        except Unavailable:
            raise  # Triton down or loading: a 503 (errors.HTTP_STATUS), never the presenter's fault
        except LipsyncError as exc:  # the presenter's fault, named as the tenant sent it, with its cause kept
            raise reworded(exc, tenant_message(exc, work, name, where="live")) from None


@router.post("/v1/live/sessions", status_code=201, summary="Start a live session with a presenter (id or upload)")
async def create_session(svc: Svc, who: Tenant, live: Hub,
                         presenter_id: Annotated[str | None, Form()] = None,
                         face: Annotated[UploadFile | None, File(description="presenter video or photo")] = None):
    live.reserve(who)  # the session limits hold before anything is decoded
    try:
        pool = TritonPool(svc.settings.triton, retry_seconds=0, request_timeout=2.0, priority=LIVE_PRIORITY)
        presenter = await run_in_threadpool(_prepare, svc, who, presenter_id, face, pool)
        entry = await live.create(who, presenter, pool)
    finally:
        live.release(who)
    base = f"/v1/live/sessions/{entry.id}"
    return JSONResponse({"id": entry.id, "fps": entry.session.fps, "ice_servers": live.ice_servers(),
                         "lookahead_ms": round(1000 * entry.session.lookahead / entry.session.fps),
                         "delay_ms": round(1000 * entry.session.delay_slots / entry.session.fps),
                         "links": {"self": base, "offer": f"{base}/offer", "audio": f"{base}/audio"}}, status_code=201)


@router.post("/v1/live/sessions/{session_id}/offer", summary="WebRTC: the peer's offer in, the answer out")
async def offer(session_id: str, request: Request, who: Tenant, live: Hub):
    try:
        body = await request.json()
        sdp, kind = str(body["sdp"]), str(body["type"])
    except (ValueError, KeyError, TypeError):
        raise InputError('send JSON {"type": "offer", "sdp": "..."}') from None
    return await live.answer(live.get(who, session_id), sdp, kind)


@router.get("/v1/live/sessions", summary="The caller's live sessions (to find one to end when at the limit)")
async def list_sessions(who: Tenant, live: Hub):
    mine = sorted((entry for entry in live.sessions.values() if entry.tenant == who), key=lambda e: e.created)
    return {"sessions": [session_view(entry) for entry in mine], "limit": live.settings.live_max_sessions_per_tenant}


@router.get("/v1/live/sessions/{session_id}", summary="A live session: frames sent, late frames, queued speech")
async def get_session(session_id: str, who: Tenant, live: Hub):
    return session_view(live.get(who, session_id))


def session_view(entry) -> dict:
    session = entry.session
    return {"id": entry.id, "age_s": round(time.monotonic() - entry.created, 1),
            "connected": entry.pc is not None and entry.pc.connectionState == "connected",
            "frames_sent": entry.sent, "frames_late": entry.late, "frames_generated": session.frames_generated,
            "frames_held": session.frames_held, "delay_ms": round(1000 * session.delay_slots / session.fps),
            "queued_speech_s": round(session.queued_seconds, 3), "triton_errors": session.triton_errors,
            "onset_latency_ms": list(entry.latencies_ms), "links": {"self": f"/v1/live/sessions/{entry.id}"}}


@router.post("/v1/live/sessions/{session_id}/interrupt", summary="Barge-in: drop queued speech, back to idle")
async def interrupt(session_id: str, who: Tenant, live: Hub):
    live.get(who, session_id).session.interrupt()
    return {"interrupted": True}


@router.post("/v1/live/sessions/{session_id}/say", summary="Speak a text (espeak-ng: for demos, not a production voice)")
async def say(session_id: str, who: Tenant, live: Hub, text: Annotated[str, Form(min_length=1, max_length=SAY_MAX_CHARS)]):
    entry = live.get(who, session_id)
    pcm = await run_in_threadpool(_speak, text)
    live.push(entry, pcm)
    return {"queued_s": round(entry.session.queued_seconds, 3)}


def _speak(text: str) -> bytes:
    """The text spoken by espeak-ng (as data on its stdin, never as an option), bounded in time."""
    from lipsync_triton.preprocessing.audio import load_audio
    from lipsync_triton.samples import write_speech

    with tempfile.TemporaryDirectory(prefix="say-") as d:
        try:
            wav = load_audio(write_speech(Path(d) / "say.wav", text, timeout=SAY_TIMEOUT_S))
        except LipsyncError as exc:
            raise InputError(str(exc)) from None
    return pcm16(wav).tobytes()


@router.delete("/v1/live/sessions/{session_id}", status_code=204, summary="End a live session and free what it held")
async def delete_session(session_id: str, who: Tenant, live: Hub):
    live.get(who, session_id)
    await live.end(session_id, reason="deleted")
    return PlainTextResponse(status_code=204)


@router.websocket("/v1/live/sessions/{session_id}/audio")
async def push_audio(websocket: WebSocket, session_id: str):
    """PCM16 (16 kHz mono, little-endian) as binary messages of any size; JSON text messages
    {"type": "interrupt"} (drop queued speech, back to idle) and {"type": "end"} (end the session).
    Authorization: Bearer <key> as for every /v1 call. Errors close with 1008 (policy) and a reason."""
    live: LiveHub = websocket.app.state.live
    try:
        who = tenant_of(websocket.app.state.service, websocket.headers.get("authorization"),
                        websocket.client.host if websocket.client else "")
        entry = live.get(who, session_id)
    except Exception as exc:
        await websocket.close(code=1008, reason=getattr(exc, "detail", None) or str(exc)[:120])
        return
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                live.push(entry, message["bytes"])
            elif control_message(message.get("text") or "") == "interrupt":
                entry.session.interrupt()
            else:
                await live.end(session_id, reason="end message")
                await websocket.close(code=1000, reason="session ended")
                return
    except WebSocketDisconnect:
        return
    except LipsyncError as exc:
        await websocket.close(code=1008, reason=str(exc)[:120])


@router.get("/live", include_in_schema=False)
def live_page():
    return FileResponse(PAGE, media_type="text/html")
