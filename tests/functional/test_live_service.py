"""Live sessions through the service: a real `lipsync api`, a real tritonserver, an aiortc peer on
loopback receiving the presenter over WebRTC, speech pushed over the WebSocket; and what a hostile
or careless client meets (bad SDP, odd PCM, garbage, another tenant's session, too many sessions)."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from lipsync_triton.client.live import pcm16
from lipsync_triton.preprocessing.audio import load_audio
from service_harness import Service

KEYS = "acme:key-acme-for-tests,globex:key-globex-for-tests"
ACME, GLOBEX = {"Authorization": "Bearer key-acme-for-tests"}, {"Authorization": "Bearer key-globex-for-tests"}


@pytest.fixture(scope="module")
def service(triton, tmp_path_factory):
    with Service(tmp_path_factory.mktemp("live") / "data", triton.grpc_url, keys=KEYS, workers=0,
                 extra_env={"LIPSYNC_LIVE_MAX_SESSIONS_PER_TENANT": "2", "LIPSYNC_BODY_TIMEOUT_S": "2"}) as svc:
        yield svc


def _start(service, media, headers=ACME) -> dict:
    with open(media["clip"], "rb") as f:
        answer = httpx.post(f"{service.base}/v1/live/sessions", headers=headers, files={"face": ("anchor.mp4", f)}, timeout=120)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _speech_pcm(media) -> bytes:
    return pcm16(load_audio(media["speech"])).tobytes()


async def _peer(service, session: dict, speech: bytes, seconds: float) -> dict:
    """An aiortc client: receive video and audio, push 1 s of silence then the speech over the WebSocket."""
    import websockets
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    received = {"video": [], "audio": 0}

    @pc.on("track")
    def on_track(track):
        async def pull():
            from aiortc.mediastreams import MediaStreamError

            try:
                while True:
                    frame = await track.recv()
                    if track.kind == "video":
                        received["video"].append(frame.to_ndarray(format="gray"))
                    else:
                        received["audio"] += frame.samples
            except MediaStreamError:  # the connection closed
                return
        asyncio.ensure_future(pull())

    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(base_url=service.base, headers=ACME, timeout=60) as http:
        answer = (await http.post(session["links"]["offer"], json={"type": "offer", "sdp": pc.localDescription.sdp})).json()
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        url = service.base.replace("http", "ws") + session["links"]["audio"]
        async with websockets.connect(url, additional_headers=ACME) as ws:
            await ws.send(b"\x00\x00" * 16000)  # 1 s of silence first
            for at in range(0, len(speech), 3334):  # odd chunk sizes of whole samples, faster than real time
                await ws.send(speech[at:at + 3334])
            await asyncio.sleep(seconds)
            state = (await http.get(session["links"]["self"])).json()
    await pc.close()
    return {"received": received, "state": state}


def test_a_live_session_streams_the_presenter_and_speaks_what_is_pushed(service, media):
    session = _start(service, media)
    assert session["fps"] == 25 and session["lookahead_ms"] <= 320
    speech = _speech_pcm(media)
    seconds = 1.0 + len(speech) / 32000 + 2.0
    out = asyncio.run(_peer(service, session, speech, seconds))
    video, state = out["received"]["video"], out["state"]
    assert len(video) >= 0.5 * 25 * seconds, len(video)  # frames arrive (decoded VP8) at about real time
    assert out["received"]["audio"] > 0.5 * 48000 * seconds * 0.5  # Opus audio came back too
    assert state["frames_generated"] >= 1 and state["triton_errors"] == 0, state  # the speech made mouths (how many in
    # time is a speed figure: a slow CPU holds some, BENCHMARKS.md)
    assert state["frames_sent"] >= len(video), state  # (late frames are a speed figure: BENCHMARKS.md, not asserted here)
    deadline = time.monotonic() + 30  # the peer hung up: the session ends and frees what it held
    while httpx.get(f"{service.base}{session['links']['self']}", headers=ACME).status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_hostile_live_clients_get_one_line_refusals_and_the_server_keeps_serving(service, media):
    import websockets

    session = _start(service, media)
    base = service.base
    bad = httpx.post(f"{base}{session['links']['offer']}", headers=ACME, json={"type": "offer", "sdp": "v=0\r\ngarbage"})
    assert bad.status_code == 422 and "offer" in bad.json()["detail"] and "\n" not in bad.json()["detail"]
    assert httpx.post(f"{base}{session['links']['offer']}", headers=ACME, content=b"{{{").status_code == 422
    assert httpx.get(f"{base}{session['links']['self']}", headers=GLOBEX).status_code == 404  # another tenant's
    session = _start(service, media)  # the bad offer ended the first one

    async def closed_with(headers, *messages) -> tuple[int, str]:
        url = base.replace("http", "ws") + session["links"]["audio"]
        try:
            async with websockets.connect(url, additional_headers=headers) as ws:
                for message in messages:
                    await ws.send(message)
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else 0, closed.rcvd.reason if closed.rcvd else ""
        except websockets.InvalidStatus as refused:
            return refused.response.status_code, ""
        return 0, ""

    code, reason = asyncio.run(closed_with(ACME, b"\x01\x02\x03"))
    assert code == 1008 and "even number of bytes" in reason
    code, reason = asyncio.run(closed_with(ACME, "not json"))
    assert code == 1008 and "interrupt" in reason
    code, _ = asyncio.run(closed_with(GLOBEX, b"\x00\x00"))
    assert code in (1008, 403)  # another tenant's session id: refused
    second = _start(service, media)
    with open(media["clip"], "rb") as f:
        third = httpx.post(f"{base}/v1/live/sessions", headers=ACME, files={"face": ("a.mp4", f)}, timeout=120)
    assert third.status_code == 429 and "live sessions per tenant" in third.json()["detail"]
    assert "GET /v1/live/sessions" in third.json()["detail"]  # where to find the ones to end
    listed = httpx.get(f"{base}/v1/live/sessions", headers=ACME).json()
    assert [s["id"] for s in listed["sessions"]] == [session["id"], second["id"]] and listed["limit"] == 2
    assert httpx.get(f"{base}/v1/live/sessions", headers=GLOBEX).json()["sessions"] == []  # only one's own
    for s in (session, second):
        assert httpx.delete(f"{base}{s['links']['self']}", headers=ACME).status_code == 204
    assert httpx.get(f"{base}/v1/live/sessions", headers=ACME).json()["sessions"] == []
    assert httpx.get(f"{base}/healthz").status_code == 200
    page = httpx.get(f"{base}/live")
    assert page.status_code == 200 and "RTCPeerConnection" in page.text


def test_the_live_page_in_chromium_with_a_fake_microphone(service, media, tmp_path):
    """Debian's Chromium with its fake microphone fed from a WAV (silence, speech, silence, looped):
    the page starts a session, the video plays and decodes, the speech makes a mouth."""
    import re
    import subprocess

    from playwright.sync_api import sync_playwright

    wav = tmp_path / "mic.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-i", str(media["speech"]),
                    "-filter_complex", "[0]atrim=0:1.5[s];[s][1][0]concat=n=3:v=0:a=1,atrim=0:8", "-ar", "48000", str(wav)], check=True)
    flags = ["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=flags, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{service.base}/live")
            page.fill("#key", "key-acme-for-tests")
            page.set_input_files("#face", str(media["clip"]))
            page.click("#start")
            page.wait_for_function("document.querySelector('#status').innerText.startsWith('live')", timeout=120000)
            session = re.search(r"session ([0-9a-f]{32})", page.inner_text("#status")).group(1)
            page.wait_for_function("document.querySelector('#video').readyState >= 2 && document.querySelector('#video').videoWidth > 0",
                                   timeout=60000)
            page.wait_for_timeout(8000)  # the looped speech plays into the microphone
            decoded = page.evaluate("""async () => { const v = document.querySelector('#video');
                return v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0; }""")
            assert decoded >= 50, decoded
            page.screenshot(path=str(tmp_path / "live.png"))  # kept with the test's files
            state = httpx.get(f"{service.base}/v1/live/sessions/{session}", headers=ACME).json()
            assert state["frames_generated"] >= 1, state  # the microphone's speech made a mouth (how many in time: BENCHMARKS.md)
            page.click("#stop")
        finally:
            browser.close()


def test_perf_live_measures_onset_latency_from_outside(service, tmp_path):
    """`lipsync perf live` end to end on one session and one onset: latency, the server's part and the
    A/V offset at the receiver (the figures are in BENCHMARKS.md)."""
    from lipsync_triton.perf.live_bench import run_live_bench

    report = run_live_bench(service.base, "key-acme-for-tests", tmp_path, sessions=1, onsets=1, size="320x192")
    row = report["rows"][0]
    assert row["onsets"] == 1 and row["missed"] == 0 and row["latency_p50_ms"] > 200, row  # Wav2Lip's look-ahead is the floor
    assert row["server_p50_ms"] is not None and row["server_p50_ms"] < row["latency_p50_ms"], row
    assert row["av_offset_start_ms"] is not None and abs(row["av_offset_start_ms"]) < 1000, row  # heard and seen: this burst's
    assert row["av_drift_ms"] == 0.0, row  # one burst: its start is its end
    assert (tmp_path / "live_bench.json").is_file()


def test_a_quiet_audio_websocket_outlives_the_slow_client_deadlines(service, media):
    """The slow-client body deadline (2 s here) is for HTTP bodies; an upgraded WebSocket that is
    quiet between utterances must stay open (it was cut after LIPSYNC_BODY_TIMEOUT_S)."""
    import websockets

    session = _start(service, media)

    async def quiet_then_speak() -> None:
        url = service.base.replace("http", "ws") + session["links"]["audio"]
        async with websockets.connect(url, additional_headers=ACME) as ws:
            await asyncio.sleep(5.0)
            await ws.send(b"\x00\x00" * 320)
            await ws.send('{"type": "interrupt"}')
            await asyncio.sleep(0.5)
            await ws.send(b"\x00\x00" * 320)

    asyncio.run(quiet_then_speak())
    assert httpx.delete(f"{service.base}{session['links']['self']}", headers=ACME).status_code == 204


def test_say_text_is_spoken_never_read_as_an_espeak_option(service, media, tmp_path):
    """`-f<file>` once made espeak-ng read that file into the caller's stream (an existing file
    answered 200, a missing one 500). Text is data: both are spoken as the same few characters."""
    session = _start(service, media)
    secret = tmp_path / "server-file.txt"
    secret.write_text("this server file must never be read aloud " * 40)  # ~2 minutes of speech if it were read
    base, queued = service.base, {}
    try:
        for name, text in {"existing file": f"-f{secret}", "missing file": f"-f{tmp_path}/missing.txt",
                           "plain": "hello there"}.items():
            assert httpx.post(f"{base}{session['links']['self']}/interrupt", headers=ACME).status_code == 200
            answer = httpx.post(f"{base}{session['links']['self']}/say", headers=ACME, data={"text": text}, timeout=60)
            assert answer.status_code == 200, (name, answer.text)
            queued[name] = answer.json()["queued_s"]
        assert 0 < queued["existing file"] < 30 and queued["existing file"] == pytest.approx(queued["missing file"], abs=1.0), queued
        too_long = httpx.post(f"{base}{session['links']['self']}/say", headers=ACME, data={"text": "a" * 2001})
        assert too_long.status_code == 422
    finally:
        httpx.delete(f"{base}{session['links']['self']}", headers=ACME)


def test_a_huge_live_presenter_cannot_exhaust_the_api(service, media, tmp_path):
    """A small file that decodes to gigabytes: the session limits are checked before it is decoded,
    and a presenter is held at most LIPSYNC_LIVE_MAX_FRAME_PIXELS large within LIPSYNC_LIVE_PRESENTER_MB."""
    import subprocess

    import psutil

    huge = tmp_path / "huge.mp4"  # 1920x1080 at 60 fps for 4 s: 240 frames, 1.4 GB decoded as BGR
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=60:duration=4", "-c:v", "libx264",
                    "-preset", "ultrafast", "-crf", "40", str(huge)], check=True)
    api = psutil.Process(service.proc.pid)
    before = api.memory_info().rss
    sessions = [_start(service, media), _start(service, media)]  # acme's limit is 2
    try:
        with open(huge, "rb") as f:
            third = httpx.post(f"{service.base}/v1/live/sessions", headers=ACME, files={"face": ("huge.mp4", f)}, timeout=120)
        assert third.status_code == 429 and "live sessions per tenant" in third.json()["detail"]
        with open(huge, "rb") as f:  # globex may start one: scaled to 960x540, 240 frames = 187 MB > 160 MB
            refused = httpx.post(f"{service.base}/v1/live/sessions", headers=GLOBEX, files={"face": ("huge.mp4", f)}, timeout=300)
        assert refused.status_code == 422 and "LIPSYNC_LIVE_PRESENTER_MB" in refused.json()["detail"], refused.text
        assert "960x540" in refused.json()["detail"] and "\n" not in refused.json()["detail"]
    finally:
        for s in sessions:
            httpx.delete(f"{service.base}{s['links']['self']}", headers=ACME)
    grown = api.memory_info().rss - before
    assert grown < 400 * 2**20, f"the API grew by {grown / 2**20:.0f} MB"
