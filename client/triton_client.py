"""gRPC access to the served models: several server URLs, per-thread clients, bounded retries.

A worker process (job service, batch runner) gives a list of URLs (or `dns://NAME:PORT` for every
pod behind a headless Service); each request goes to the next healthy endpoint in turn, and a
transient failure (UNAVAILABLE, DEADLINE_EXCEEDED: a server restarting or overloaded) benches that
endpoint with a bounded back-off and the request goes elsewhere, until `retry_seconds` have passed
(see endpoints.py).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from lipsync_triton import log
from lipsync_triton.errors import Cancelled, LipsyncError, ServerUnavailable  # noqa: F401 (re-exported)
from .endpoints import BACKOFF_START_S, Endpoints
from .in_flight import POLL_SECONDS, JobCancel

WAV2LIP_MODEL = "wav2lip"
DETECTOR_MODEL = "face_detector"
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
LIVENESS_TIMEOUT_S = 15.0  # a saturated 2-core server can take seconds to answer; a closed port fails at once
MODEL_SHA256_PARAMETER = "model_sha256"  # written by `lipsync export` into every config.pbtxt
_NUMPY_TO_TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8"}


@dataclass
class ModelInfo:
    name: str
    max_batch_size: int
    input_dims: dict[str, list[int]]
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def weights(self) -> str:
        """"random" or "checkpoint sha256:..." as the export wrote it ("unknown" for other repositories)."""
        return self.parameters.get("weights") or "unknown"

    @property
    def identity(self) -> str:
        """What the served weights are: the content hash the export wrote into the config."""
        return self.parameters.get(MODEL_SHA256_PARAMETER) or f"{self.name}:unversioned"


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's channel options, plus two that let a restarted server be used again at once.

    gRPC shares subchannels (one per address) between all channels of a process, and a subchannel
    to a server that was down keeps growing its reconnect back-off (1 s x 1.6 per try, up to 120 s):
    a new channel to the same address reused it and failed fast with the old error until the
    back-off expired. A local subchannel pool gives each channel its own connection state (a new
    client connects at once), and the reconnect back-off is capped at the client's own first bench
    (endpoints.py), which decides when an endpoint is tried again."""
    keepalive = grpcclient.KeepAliveOptions()
    backoff_ms = int(BACKOFF_START_S * 1000)
    return [("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.min_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", backoff_ms)]


def new_client(url: str) -> grpcclient.InferenceServerClient:
    """A gRPC client to one Triton endpoint with `channel_args`."""
    return grpcclient.InferenceServerClient(url, channel_args=channel_args())


def _status(exc: InferenceServerException) -> str:
    return str(exc.status() or "")


class TritonPool:
    """Thread-safe inference over one or more Triton gRPC endpoints."""

    def __init__(self, urls: list[str] | str, retry_seconds: float = 120.0, request_timeout: float = 120.0,
                 cancel: JobCancel | threading.Event | None = None, traceparent: str | None = None, priority: int = 0):
        targets = [urls] if isinstance(urls, str) else list(urls)
        if not targets:
            raise LipsyncError("no Triton server URL given; pass --url HOST:PORT")
        try:
            self.endpoints = Endpoints(targets)
        except ValueError as exc:
            raise LipsyncError(str(exc)) from None
        self.retry_seconds = retry_seconds
        self.request_timeout = request_timeout
        # A bare Event (a caller's) is wrapped so that this pool never sets it.
        self.cancel = cancel if isinstance(cancel, JobCancel) else JobCancel(cancel)
        self._local = threading.local()
        # W3C trace context sent with every request: Triton's OpenTelemetry spans join the job's trace.
        self.headers = {"traceparent": traceparent} if traceparent else None
        # Triton request priority (1 = highest of the models' priority_levels; 0 = the model's default
        # level, where batch jobs run): live sessions use 1 so a batch job never starves them.
        self.priority = priority

    @property
    def urls(self) -> list[str]:
        return self.endpoints.urls

    def _forget(self, url: str) -> None:
        """Drop this thread's channel to `url`: a restarted server needs a fresh one."""
        getattr(self._local, "clients", {}).pop(url, None)

    def _client(self, url: str) -> grpcclient.InferenceServerClient:
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if url not in clients:
            clients[url] = new_client(url)
        return clients[url]

    def check_ready(self, models: tuple[str, ...] = (WAV2LIP_MODEL, DETECTOR_MODEL)) -> dict[str, ModelInfo]:
        """Fail fast with the URL named when no server answers or a model is missing."""
        reachable = []
        problems = []
        for url in self.urls:
            client = self._client(url)
            try:
                if not client.is_server_live(client_timeout=LIVENESS_TIMEOUT_S):
                    problems.append(f"{url} is not live")
                    self.endpoints.failed(url)
                    continue
            except InferenceServerException as exc:
                reason = (exc.message() or _status(exc) or "no answer").split(";")[0].strip()
                problems.append(f"cannot reach Triton at {url} ({reason})")
                self.endpoints.failed(url)
                self._forget(url)
                continue
            missing = [m for m in models if not self._model_ready(client, m)]
            if missing:
                problems.append(f"Triton at {url} has no ready model {', '.join(repr(m) for m in missing)}; "
                                "serve a repository written by `lipsync export`")
                self.endpoints.exclude(url)
                continue
            reachable.append(url)
            self.endpoints.ok(url)
        if not reachable:
            hint = "" if any("no ready model" in p for p in problems) else "; start one with `lipsync serve`"
            raise ServerUnavailable("; ".join(problems) + hint)
        if problems:
            log.event("servers_degraded", usable=",".join(reachable), problems="; ".join(problems))
        # Unreachable endpoints stay in the pool, benched with a back-off: a restarted one is used again.
        client = self._client(reachable[0])
        infos = {}
        for model in models:
            cfg = client.get_model_config(model, as_json=True)["config"]
            infos[model] = ModelInfo(model, int(cfg.get("max_batch_size", 0)),
                                     {t["name"]: [int(d) for d in t["dims"]] for t in cfg["input"]},
                                     {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()})
        return infos

    @staticmethod
    def _model_ready(client: grpcclient.InferenceServerClient, model: str) -> bool:
        try:
            return bool(client.is_model_ready(model, client_timeout=LIVENESS_TIMEOUT_S))
        except InferenceServerException:
            return False

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """One request to the next healthy endpoint; a transient failure benches that endpoint and the
        request goes to another one (or waits for one to come back) until retry_seconds have passed."""
        deadline = time.monotonic() + self.retry_seconds
        tensors = []
        for name, array in inputs.items():
            tensor = grpcclient.InferInput(name, list(array.shape), _NUMPY_TO_TRITON[array.dtype])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        requested = [grpcclient.InferRequestedOutput(o) for o in outputs]
        last_error = "failed: no endpoint answered"
        while True:
            if self.cancel.is_set():
                raise Cancelled("job cancelled")
            try:
                url, wait = self.endpoints.pick()
            except OSError as exc:  # a dns:// name without addresses right now
                url, wait, last_error = "", 1.0, f"failed: {exc}"
            if wait > 0:  # every endpoint is benched: wait for the first to come back
                if time.monotonic() + wait > deadline:
                    raise ServerUnavailable(f"inference on {model} {last_error}") from None
                if self.cancel.wait(wait):
                    raise Cancelled("job cancelled") from None
                continue
            try:
                result = self._infer_once(url, model, tensors, requested)
            except InferenceServerException as exc:
                status = _status(exc)
                retryable = any(code in status for code in RETRYABLE) or "Socket closed" in (exc.message() or "")
                last_error = f"at {url} failed: {(exc.message() or status).splitlines()[0][:200]}"
                if not retryable:
                    raise LipsyncError(f"inference on {model} {last_error}") from None
                backoff = self.endpoints.failed(url)
                self._forget(url)
                log.event("retry", model=model, url=url, status=status, benched_s=round(backoff, 2))
                if time.monotonic() > deadline:
                    raise ServerUnavailable(f"inference on {model} {last_error}") from None
                continue
            self.endpoints.ok(url)
            return {o: result.as_numpy(o) for o in outputs}

    def _infer_once(self, url: str, model: str, tensors: list, requested: list):
        """One gRPC request that the job's cancel flag aborts at once (the call is cancelled on the wire)."""
        done = threading.Event()
        outcome: dict = {}

        def on_done(result=None, error=None) -> None:  # tritonclient passes keyword arguments
            outcome["result"], outcome["error"] = result, error
            done.set()

        call = self._client(url).async_infer(model, tensors, on_done, outputs=requested, client_timeout=self.request_timeout,
                                            headers=self.headers, priority=self.priority)
        while not done.wait(POLL_SECONDS):
            if self.cancel.is_set():
                call.cancel()
                raise Cancelled("job cancelled")
        if outcome["error"] is not None:
            raise outcome["error"]
        return outcome["result"]

    def statistics(self, model: str, url: str | None = None) -> dict:
        """Triton's statistics for a model (inference_count, execution_count, ...)."""
        stats = self._client(url or self.urls[0]).get_inference_statistics(model, as_json=True)
        entry = stats["model_stats"][0]
        return {"inference_count": int(entry.get("inference_count", 0)), "execution_count": int(entry.get("execution_count", 0))}
