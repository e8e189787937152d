"""gRPC access to the served models: several server URLs, per-thread clients, bounded retries.

A worker process (job service, batch runner) gives a list of URLs (or `dns://NAME:PORT` for every
pod behind a headless Service); each request goes to the next healthy endpoint in turn, and a
transient failure (UNAVAILABLE, DEADLINE_EXCEEDED: a server restarting or overloaded; a server that
answers while its models still load) benches that endpoint with a bounded back-off and the request
goes elsewhere, until `retry_seconds` have passed since it was sent (see endpoints.py).

One pool serves one model: the first readiness check pins each model's identity (the content hash
`lipsync export` writes into its config), and an endpoint is used only after it showed the same
one (checked again after it failed and every few seconds), so a rolling update never mixes two
models within one video. When no endpoint serves the pinned model any more, `ModelChanged`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from lipsync_triton import log
from lipsync_triton.errors import Cancelled, LipsyncError, ModelChanged, ServerUnavailable  # noqa: F401 (re-exported)
from lipsync_triton.model_contract import FACE_DETECTOR, MODEL_SHA256_PARAMETER, WAV2LIP, WEIGHTS_PARAMETER
from .endpoints import BACKOFF_START_S, Endpoints
from .in_flight import POLL_SECONDS, JobCancel

WAV2LIP_MODEL = WAV2LIP.name
DETECTOR_MODEL = FACE_DETECTOR.name
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
# What Triton answers for a model it is (re)loading or has not loaded yet: unavailable, not the input's fault.
MODEL_LOADING = ("unknown model", "no available versions", "is not ready", "not ready", "is not found")
KEEPALIVE_MS = 10_000  # pings while a request waits: a vanished node is noticed in ~15 s, not at the request timeout
KEEPALIVE_TIMEOUT_MS = 5_000
# How long an endpoint's model identity is trusted before it is asked again (one small RPC): shorter
# than any server restart, so a server that came back with another model between two requests
# without a request failing is still noticed.
VERIFY_EVERY_S = 1.0
WAIT_MAX_PAUSE_S = 30.0
LIVENESS_TIMEOUT_S = 15.0  # a saturated 2-core server can take seconds to answer; a closed port fails at once
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
        return self.parameters.get(WEIGHTS_PARAMETER) or "unknown"

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
    backoff_ms = int(BACKOFF_START_S * 1000)
    # Keepalive pings only while calls are in flight (an idle channel sends none, so a server's
    # ping policy never closes it); the servers we start accept them (serving/server.py).
    return [("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.min_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", backoff_ms)]


def new_client(url: str) -> grpcclient.InferenceServerClient:
    """A gRPC client to one Triton endpoint with `channel_args`."""
    return grpcclient.InferenceServerClient(url, channel_args=channel_args())


def _status(exc: InferenceServerException) -> str:
    return str(exc.status() or "")


def is_unavailable(exc: InferenceServerException) -> bool:
    """A failure a later try may not meet: the server down, restarting, overloaded, or loading models."""
    message = (exc.message() or "").lower()
    return (any(code in _status(exc) for code in RETRYABLE) or "socket closed" in message
            or any(words in message for words in MODEL_LOADING))


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
        self._pinned: dict[str, str] = {}  # model -> the identity every request must meet
        self._verified_at: dict[str, float] = {}  # url -> when it last showed the pinned identities
        self._verify_lock = threading.Lock()

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

    def check_ready(self, models: tuple[str, ...] = (WAV2LIP_MODEL, DETECTOR_MODEL), wait_s: float = 0.0) -> dict[str, ModelInfo]:
        """The models' configurations from a server that has them ready. While none has (down,
        restarting, still loading), wait up to `wait_s` with a pause growing to 30 s; then raise
        ServerUnavailable naming the URLs (for the operator; the service words it for tenants)."""
        deadline = time.monotonic() + wait_s
        pause = 1.0
        while True:
            try:
                return self._check_ready_once(models)
            except ServerUnavailable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.event("waiting_for_triton", detail=str(exc)[:300], left_s=round(left, 1))
                if self.cancel.wait(min(pause, left)):
                    raise Cancelled("job cancelled") from None
                pause = min(pause * 2, WAIT_MAX_PAUSE_S)

    def _check_ready_once(self, models: tuple[str, ...]) -> dict[str, ModelInfo]:
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
            if missing:  # loading (a restart, a reload) or not in its repository: not usable now
                problems.append(f"Triton at {url} has no ready model {', '.join(repr(m) for m in missing)}; "
                                "it may still be loading (else serve a repository written by `lipsync export`)")
                self.endpoints.failed(url)
                continue
            reachable.append(url)
        if not reachable:
            hint = "" if any("no ready model" in p for p in problems) else "; start one with `lipsync serve`"
            raise ServerUnavailable("; ".join(problems) + hint)
        # Unreachable endpoints stay in the pool, benched with a back-off: a restarted one is used again.
        infos = self._model_infos(reachable[0], models)
        with self._verify_lock:
            for model, info in infos.items():
                self._pinned.setdefault(model, info.identity)
        usable = [url for url in reachable if self._verify_quietly(url)]
        if not usable:
            raise ModelChanged(f"no server serves the model this job started with any more ({self._pinned})")
        if problems:
            log.event("servers_degraded", usable=",".join(usable), problems="; ".join(problems))
        for url in usable:
            self.endpoints.ok(url)
        return infos if reachable[0] in usable else self._model_infos(usable[0], models)

    def _verify_quietly(self, url: str) -> bool:
        try:
            return self._verify(url)
        except InferenceServerException:  # gone since it answered: benched, tried again later
            self.endpoints.failed(url)
            return False

    def _model_infos(self, url: str, models: tuple[str, ...] | list[str]) -> dict[str, ModelInfo]:
        client = self._client(url)
        infos = {}
        for model in models:
            cfg = client.get_model_config(model, as_json=True)["config"]
            infos[model] = ModelInfo(model, int(cfg.get("max_batch_size", 0)),
                                     {t["name"]: [int(d) for d in t["dims"]] for t in cfg["input"]},
                                     {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()})
        return infos

    def _verify(self, url: str) -> bool:
        """Whether `url` serves the pinned models (asked at most every VERIFY_EVERY_S); one that
        serves others is dropped from this pool for good. Raises InferenceServerException when it
        cannot be asked."""
        with self._verify_lock:
            if not self._pinned or time.monotonic() - self._verified_at.get(url, -VERIFY_EVERY_S) < VERIFY_EVERY_S:
                return True
            pinned = dict(self._pinned)
        served = {model: info.identity for model, info in self._model_infos(url, list(pinned)).items()}
        if served != pinned:
            self.endpoints.exclude(url)
            log.event("endpoint_model_differs", url=url, pinned=str(pinned), served=str(served), level="warning")
            return False
        with self._verify_lock:
            self._verified_at[url] = time.monotonic()
        return True

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
            if self.endpoints.excluded_all():
                raise ModelChanged(f"inference on {model}: every server now serves another model than the job started with")
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
                if not self._verify(url):
                    continue
                result = self._infer_once(url, model, tensors, requested)
            except InferenceServerException as exc:
                status = _status(exc)
                last_error = f"at {url} failed: {(exc.message() or status).splitlines()[0][:200]}"
                if not is_unavailable(exc):
                    raise LipsyncError(f"inference on {model} {last_error}") from None
                backoff = self.endpoints.failed(url)
                self._forget(url)
                with self._verify_lock:
                    self._verified_at.pop(url, None)  # it may come back with another model: ask before using it
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
