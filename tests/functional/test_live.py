"""Live mode's core (client/live.py) against a real tritonserver: speech pushed in odd-sized chunks
and faster than real time comes out in order with nothing lost, the mouth is generated only while
someone speaks, silence shows the presenter's own pixels, and an interrupt returns to idle at once."""
from __future__ import annotations

import numpy as np
import pytest

from lipsync_triton.client.live import LiveFrame, LivePresenter, LiveSession, pcm16
from lipsync_triton.client.options import GenerateOptions
from lipsync_triton.client.triton_client import TritonPool
from lipsync_triton.errors import LipsyncError
from lipsync_triton.preprocessing.audio import load_audio


@pytest.fixture(scope="module")
def presenter(triton, media, tmp_path_factory):
    pool = TritonPool(triton.grpc_url)
    return LivePresenter.load(media["clip"], pool, GenerateOptions(cache_dir=tmp_path_factory.mktemp("cache")), max_seconds=1.0)


def _speech(media) -> np.ndarray:
    return pcm16(load_audio(media["speech"])).astype(np.int16)


def _lower_face_changed(frame: LiveFrame, presenter: LivePresenter) -> float:
    own = presenter.frames[presenter.pingpong(frame.index)]
    x1, y1, x2, y2 = presenter.boxes[presenter.pingpong(frame.index)]
    mid = (y1 + y2) // 2
    return float(np.abs(frame.image[mid:y2, x1:x2].astype(int) - own[mid:y2, x1:x2].astype(int)).mean())


def test_pushed_speech_comes_out_in_order_with_lips_only_while_speaking(presenter, triton, media):
    session = LiveSession(presenter, TritonPool(triton.grpc_url, retry_seconds=0, priority=1))
    try:
        speech = _speech(media)
        silence = np.zeros(8000, np.int16)
        pushed = np.concatenate([silence, speech, silence])
        sizes = [1, 333, 4099, 7, 16000]  # odd sizes, all at once: faster than real time
        at, i = 0, 0
        while at < len(pushed):
            session.push_pcm(pushed[at:at + sizes[i % len(sizes)]].tobytes())
            at += sizes[i % len(sizes)]
            i += 1
        with pytest.raises(LipsyncError, match="even number of bytes"):
            session.push_pcm(b"\x01\x02\x03")
        frames = [session.next_frame() for _ in range(len(pushed) // 640 + 10)]
        assert [f.index for f in frames] == list(range(len(frames)))
        audio = np.concatenate([f.audio for f in frames])
        assert np.array_equal(audio[:len(pushed)], pushed) and not audio[len(pushed):].any()  # in order, nothing lost
        speaking = [f for f in frames if f.speaking]
        assert speaking and not any(f.speaking for f in frames[:8])  # the first 0.5 s is silence
        generated = [f for f in frames if f.generated >= 1.0]
        assert len(generated) >= 0.6 * len(speaking), (len(generated), len(speaking))
        assert min(_lower_face_changed(f, presenter) for f in generated) > 1.0  # a generated mouth, not the presenter's
        for f in frames[:8] + frames[-5:]:  # silence: the presenter's own frame, exactly
            assert f.generated == 0 and np.array_equal(f.image, presenter.frames[presenter.pingpong(f.index)])
        assert session.triton_errors == 0
    finally:
        session.close()


def test_an_interrupt_returns_to_idle_at_once_and_close_releases_the_session(presenter, triton, media):
    session = LiveSession(presenter, TritonPool(triton.grpc_url, retry_seconds=0, priority=1))
    speech = _speech(media)
    session.push_pcm(np.concatenate([speech, speech, speech]).tobytes())
    frames = [session.next_frame() for _ in range(20)]
    assert any(f.generated > 0 for f in frames)
    session.interrupt()
    assert session.queued_seconds == 0
    after = [session.next_frame() for _ in range(10)]
    for f in after:  # the very next frame is the presenter's own, and it stays idle
        assert f.generated == 0 and not f.speaking and not f.audio.any()
        assert np.array_equal(f.image, presenter.frames[presenter.pingpong(f.index)])
    session.close()
    with pytest.raises(LipsyncError, match="closed"):
        session.next_frame()
    assert not session._pending and not session._slots and not session._queued



def test_a_session_wav2lip_cannot_keep_up_with_holds_mouths_and_never_waits_past_a_slot(presenter, triton, media):
    """A CPU slower than 25 Wav2Lip runs a second (2 AVX2 cores) must not make the stream late: with
    every slot already due, next_frame does not wait for a mouth, at most max_in_flight requests
    run, a speaking slot without its mouth holds the last one, repeated misses deepen the look-ahead
    (boundedly), and the audio is all there in order."""
    import time

    session = LiveSession(presenter, TritonPool(triton.grpc_url, retry_seconds=0, priority=1), max_in_flight=1,
                          max_extra_delay_s=0.08)
    try:
        speech = _speech(media)
        pushed = np.concatenate([speech, speech])
        session.push_pcm(pushed.tobytes())
        frames = []
        while not any(f.generated >= 1.0 for f in frames):  # a first mouth, waited for (deadline None)
            frames.append(session.next_frame())
            assert len(frames) < 60
        for _ in range(40):  # from here every slot is due when asked for: nothing is waited for
            frames.append(session.next_frame(deadline=time.monotonic() - 1.0))
            assert sum(not f.done() for f in session._pending.values()) <= 1
        held = [f for f in frames[-40:] if f.speaking and f.generated > 0]
        assert session.frames_held > 0 and len(held) >= session.frames_held  # mouths held, not dropped to the presenter
        assert session.extra_slots == session.max_extra_slots == 2  # repeated misses gave Wav2Lip a deeper look-ahead,
        assert 1 < session.stride <= 3  # then fewer mouths of their own
        assert session.delay_slots == session.lookahead + session.extra_slots
        audio = np.concatenate([f.audio for f in frames])
        assert np.array_equal(audio, pushed[:len(audio)])  # the speech itself is never skipped
        assert [f.index for f in frames] == list(range(len(frames)))
    finally:
        session.close()

def test_triton_killed_during_a_session_idles_it_and_lips_resume_when_it_is_back(exported_repo, media, tmp_path):
    import time

    from lipsync_triton.serving.server import TritonServer

    server = TritonServer(exported_repo, log_path=tmp_path / "triton.log").start()
    ports = server.ports
    pool = TritonPool(server.grpc_url, retry_seconds=0, request_timeout=2.0, priority=1)
    presenter = LivePresenter.load(media["clip"], pool, GenerateOptions(cache_dir=tmp_path / "cache"), max_seconds=1.0)
    session = LiveSession(presenter, pool)
    speech = _speech(media).tobytes()
    try:
        session.push_pcm(speech)
        assert any(session.next_frame().generated > 0 for _ in range(40))
        server.proc.kill()  # the server dies mid-session
        server.proc.wait()
        session.interrupt()
        session.push_pcm(speech)
        down = [session.next_frame() for _ in range(40)]  # no crash: the presenter idles on its own frames
        assert session.triton_errors > 0 and all(f.generated == 0 for f in down)
        server = TritonServer(exported_repo, ports=ports, log_path=tmp_path / "triton2.log").start()
        deadline = time.monotonic() + 120
        resumed = False
        while not resumed and time.monotonic() < deadline:
            session.push_pcm(speech)
            resumed = any(session.next_frame().generated > 0 for _ in range(60))
        assert resumed  # lips resume once the server is back
    finally:
        session.close()
        server.stop()


def test_ending_a_session_frees_its_session_presenter_and_peer(triton, media, tmp_path):
    """LiveTalking's users report memory that is not freed when a session ends: here nothing of an
    ended session (DELETE and a hung-up peer both call LiveHub.end) stays reachable: its
    LiveSession, its presenter's frames and crops, its RTCPeerConnection and tracks are collected."""
    import asyncio
    import gc
    import time
    import weakref

    from aiortc import RTCPeerConnection, RTCSessionDescription

    from lipsync_triton.service.live_sessions import LiveHub
    from lipsync_triton.service.settings import Settings

    async def scenario() -> tuple[LiveHub, list[weakref.ref]]:
        hub = LiveHub(Settings(data_dir=tmp_path / "data"))
        pool = TritonPool(triton.grpc_url, priority=1)
        presenter = LivePresenter.load(media["clip"], pool, GenerateOptions(cache_dir=tmp_path / "cache"), max_seconds=1.0)
        entry = await hub.create("acme", presenter, pool)
        peer = RTCPeerConnection()
        peer.addTransceiver("video", direction="recvonly")
        peer.addTransceiver("audio", direction="recvonly")
        await peer.setLocalDescription(await peer.createOffer())
        answer = await hub.answer(entry, peer.localDescription.sdp, "offer")
        await peer.setRemoteDescription(RTCSessionDescription(**answer))
        hub.push(entry, _speech(media).tobytes())
        deadline = time.monotonic() + 120
        while entry.sent < 40:  # frames flow to the peer (the driver runs)
            assert time.monotonic() < deadline, entry.sent
            await asyncio.sleep(0.1)
        refs = [weakref.ref(thing) for thing in (entry.session, presenter, presenter.frames[0], entry.pc, entry.video, entry.audio)]
        session_id = entry.id
        del entry, presenter
        await hub.end(session_id, reason="test")
        await peer.close()
        await asyncio.sleep(1.0)  # cancelled tasks unwind; a frame in the worker thread finishes
        gc.collect()
        return hub, refs

    hub, refs = asyncio.run(scenario())
    assert not hub.sessions
    assert [ref() is None for ref in refs] == [True] * len(refs)


def test_a_live_presenter_is_held_at_most_max_pixels_large_within_its_budget(triton, media, tmp_path):
    pool = TritonPool(triton.grpc_url)
    options = GenerateOptions(cache_dir=tmp_path / "cache")
    small = LivePresenter.load(media["clip"], pool, options, max_seconds=1.0, max_pixels=320 * 180, budget_bytes=16 << 20)
    assert small.frames[0].shape == (270, 320) and len(small.frames) == 25  # 640x360 scaled by 2, I420
    assert (small.boxes[:, 2] <= 320).all() and (small.boxes[:, 3] <= 180).all()  # boxes in the scaled frame
    with pytest.raises(LipsyncError, match="LIPSYNC_LIVE_PRESENTER_MB"):
        LivePresenter.load(media["clip"], pool, options, max_seconds=1.0, budget_bytes=1 << 20)
