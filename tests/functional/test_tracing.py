"""A job's trace context reaches Triton: the worker's requests carry `traceparent` and Triton's
OpenTelemetry spans (exported over OTLP/HTTP to a collector stand-in here) join that trace."""
from __future__ import annotations

import http.server
import threading
import time

import numpy as np

from lipsync_triton.client.triton_client import TritonPool
from lipsync_triton.serving.server import TritonServer
from lipsync_triton.tracing import new_traceparent, trace_id


class Collector(http.server.ThreadingHTTPServer):
    """Receives OTLP/HTTP exports (Triton 2.51 sends OTLP JSON, ids in hex; protobuf would hold raw bytes)."""

    def __init__(self):
        self.bodies: list[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                outer.bodies.append(self.rfile.read(int(self.headers.get("content-length", 0))))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def saw(self, hex_id: str) -> bool:
        return any(hex_id.encode() in body or bytes.fromhex(hex_id) in body for body in list(self.bodies))


def test_tritons_spans_join_the_trace_the_client_sends(exported_repo, tmp_path):
    collector = Collector()
    tracing = ["--trace-config=mode=opentelemetry", "--trace-config=rate=1", "--trace-config=level=TIMESTAMPS",
               f"--trace-config=opentelemetry,url=http://127.0.0.1:{collector.server_port}/v1/traces",
               "--trace-config=opentelemetry,bsp_schedule_delay=200"]
    server = TritonServer(exported_repo, log_path=tmp_path / "triton.log", extra_args=tracing).start()
    try:
        traced = new_traceparent()
        inputs = {"mel": np.zeros((1, 80, 16), np.float32), "face": np.zeros((1, 96, 96, 3), np.uint8)}
        TritonPool(server.grpc_url, traceparent=traced).infer("wav2lip", inputs, ["face_out"])
        deadline = time.monotonic() + 120
        while not collector.saw(trace_id(traced)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert collector.saw(trace_id(traced)), f"{len(collector.bodies)} exports, none in the job's trace"
        client_span = traced.split("-")[2]
        assert f'"parentSpanId":"{client_span}"'.encode() in b"".join(collector.bodies)  # Triton's root span is the client's child
    finally:
        server.stop()
        collector.shutdown()
