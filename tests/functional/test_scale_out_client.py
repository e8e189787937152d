"""The client spreads requests over several Triton servers: one killed mid-run, the run completes on
the other; once restarted, it is used again. `dns://` names resolve to every address."""
from __future__ import annotations

import pytest

from lipsync_triton.client.endpoints import Endpoints, HealthBoard, resolve
from lipsync_triton.client.generate import GenerateOptions, generate
from lipsync_triton.client.triton_client import WAV2LIP_MODEL, TritonPool
from lipsync_triton.preprocessing.media_probe import probe_media
from conftest import tone
from lipsync_triton.serving.server import Ports, TritonServer


def wav2lip_count(url: str) -> int:
    return TritonPool(url).statistics(WAV2LIP_MODEL)["inference_count"]


@pytest.fixture()
def two_servers(exported_repo, tmp_path):
    servers = [TritonServer(exported_repo, ports=Ports.free(), log_path=tmp_path / f"triton{i}.log").start() for i in range(2)]
    yield servers
    for server in servers:
        server.stop()


def test_a_server_killed_mid_run_is_survived_and_used_again_after_restart(two_servers, exported_repo, media, tmp_path):
    a, b = two_servers
    speech = tone(tmp_path / "speech.wav", 8.0)
    killed = []

    def kill_a_midway(done: int, total: int) -> None:
        if done >= total // 4 and not killed:
            killed.append(wav2lip_count(a.grpc_url))
            a.kill()  # SIGKILL to the server and its backend stubs: connections drop mid-request

    options = GenerateOptions(use_cache=False, wav2lip_batch_size=8, retry_seconds=60)
    result = generate(media["clip"], speech, tmp_path / "out.mp4", [a.grpc_url, b.grpc_url], options, progress=kill_a_midway)
    assert killed and killed[0] > 0, killed  # A served part of the run before it died
    from test_processes import _stubs_in_group

    assert not _stubs_in_group(a.proc.pid)  # nothing of A lives on
    assert probe_media(tmp_path / "out.mp4").frames == result.frames >= 190  # 8 s at 25 fps
    assert wav2lip_count(b.grpc_url) > 0


    restarted = TritonServer(exported_repo, ports=a.ports, log_path=tmp_path / "triton0-restarted.log").start()
    try:
        generate(media["clip"], media["speech"], tmp_path / "again.mp4", [a.grpc_url, b.grpc_url], options)
        counts = (wav2lip_count(restarted.grpc_url), wav2lip_count(b.grpc_url))
        assert counts[0] > 0, f"restarted server unused (A, B counts {counts})"  # back in rotation
    finally:
        restarted.stop()


def test_failed_endpoints_are_benched_with_a_bounded_backoff_and_cleared_by_a_success():
    board = HealthBoard()
    endpoints = Endpoints(["a:1", "b:2"], board)
    assert {endpoints.pick()[0] for _ in range(4)} == {"a:1", "b:2"}
    waits = [board.failed("a:1") for _ in range(8)]
    assert waits[:3] == [1.0, 2.0, 4.0] and max(waits) == 30.0
    assert {endpoints.pick()[0] for _ in range(4)} == {"b:2"}
    board.failed("b:2")
    url, wait = endpoints.pick()  # all benched: the one back soonest, and how long until then
    assert url == "b:2" and 0 < wait <= 1.0
    board.ok("a:1")
    assert endpoints.pick() == ("a:1", 0.0) or endpoints.pick() == ("a:1", 0.0)


def test_dns_names_resolve_to_every_address():
    assert "127.0.0.1:8001" in resolve("dns://localhost:8001")
    assert resolve("10.0.0.7:8001") == ["10.0.0.7:8001"]
    with pytest.raises(ValueError):
        resolve("dns://no-port")


def test_a_server_down_long_enough_for_grpc_backoff_to_grow_is_used_again_within_the_clients_backoff(exported_repo, tmp_path):
    """gRPC's own reconnect back-off (up to 120 s) grows while a server is down; channels of one process
    used to share that subchannel, so a server restarted on the same address was refused ("Connection
    refused") by every new client until the back-off expired. A fresh pool must reach it at once, and
    an old pool within the client's own back-off (endpoints.BACKOFF_MAX_S), not gRPC's."""
    import time

    from lipsync_triton.client.endpoints import BACKOFF_MAX_S
    from tritonclient.utils import InferenceServerException

    server = TritonServer(exported_repo, ports=Ports.free(), log_path=tmp_path / "a.log").start()
    old = TritonPool(server.grpc_url)
    assert old.statistics(WAV2LIP_MODEL)["inference_count"] >= 0
    client = old._client(server.grpc_url)
    server.kill()
    # 12 s of failed connects: gRPC's back-off (1 s x 1.6 per attempt) passes 10 s, past the client's first steps.
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        with pytest.raises(InferenceServerException):
            client.is_server_live(client_timeout=2)
        time.sleep(0.2)
    restarted = TritonServer(exported_repo, ports=server.ports, log_path=tmp_path / "a-restarted.log").start()
    try:
        assert TritonPool(restarted.grpc_url).statistics(WAV2LIP_MODEL)["inference_count"] >= 0  # a new pool: at once
        deadline = time.monotonic() + BACKOFF_MAX_S
        while True:  # the old pool's channel: its reconnect back-off is capped at the client's start back-off
            try:
                assert client.is_server_live(client_timeout=2)
                break
            except InferenceServerException:
                assert time.monotonic() < deadline, "the old channel did not reconnect within the client's back-off"
                time.sleep(0.2)
    finally:
        restarted.stop()
