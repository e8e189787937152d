"""Service settings: environment variables `LIPSYNC_*`, optionally a settings file
(`LIPSYNC_SETTINGS_FILE`, dotenv format). The README's table lists every field."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lipsync_triton.preprocessing.media_input import MediaLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIPSYNC_", extra="ignore")

    log_format: str = Field("json", pattern="^(json|logfmt)$", description="the service's log lines: json (one object per "
                            "line: ts in UTC, level, event, fields) or logfmt")
    checkpoint: str = Field("", description="the Wav2Lip checkpoint `lipsync api --model-repository` serves (exported at "
                            "start when the repository holds other weights); none: random weights, with a warning")
    data_dir: Path = Field(Path("lipsync-data"), description="local state: SQLite job DB, embedded queue, files, presenter cache")
    database_url: str = Field("", description="SQLAlchemy URL; default sqlite:///DATA_DIR/jobs.db (e.g. postgresql+psycopg://user@host/db)")
    queue_url: str = Field("", description="'' = embedded SQLite queue in DATA_DIR; redis://host:6379/0 for Redis")
    queue_name: str = Field("lipsync", description="queue name (several deployments can share one Redis)")
    storage_url: str = Field("", description="where inputs and results live; default DATA_DIR/files; s3://bucket/prefix")
    s3_endpoint_url: str = Field("", description="S3-compatible endpoint (MinIO, OBS); credentials from AWS_* variables")
    triton_urls: str = Field("127.0.0.1:8001", description="Triton gRPC endpoints, comma-separated")
    api_keys: str = Field("", description="'tenant:key,tenant2:key2' (plain keys)")
    api_keys_file: Path | None = Field(None, description="file of 'tenant:sha256hex-of-key' lines (hashed keys)")
    min_key_length: int = Field(16, ge=1, description="shortest plain API key accepted at start-up (a short key is guessed; "
                                "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    auth_failures_per_minute: int = Field(20, ge=0, description="failed API keys or UI sign-ins one client address may send "
                                          "per minute; then 429 with Retry-After (0 = no limit)")
    local_only: bool = Field(False, description="allow no API keys (one tenant 'local'); only on a loopback address")
    workers: int = Field(2, description="jobs run at once per worker process (threads sharing the Triton server)")
    live_max_sessions_per_tenant: int = Field(2, ge=0, description="live sessions a tenant may have at once")
    live_max_sessions: int = Field(6, ge=0, description="live sessions one API process runs at once (with "
                                   "LIPSYNC_LIVE_PRESENTER_MB, what bounds its memory)")
    live_max_frame_pixels: int = Field(1280 * 720, ge=1, description="a live presenter larger than this (width x height) is "
                                       "scaled down by a whole factor")
    live_presenter_mb: float = Field(160.0, gt=0, description="decoded presenter frames one live session may hold, in MB; "
                                     "a presenter needing more is refused with one line")
    live_idle_timeout_s: float = Field(60.0, description="a live session no peer connected to within this is ended")
    live_max_session_s: float = Field(3600.0, description="longest live session; then it is ended")
    live_fps: float = Field(25.0, description="live video frames per second (16000 / fps samples per frame: 25, 20, 16...)")
    live_presenter_seconds: float = Field(4.0, description="seconds of the presenter kept in memory for a live session's idle loop")
    live_ice_servers: str = Field("", description="STUN/TURN URLs for live WebRTC, comma-separated (none: host candidates only, "
                                  "enough on one network)")
    worker_processes: int = Field(1, description="worker processes `lipsync api` starts beside itself (0 = none)")
    background_nice: int = Field(10, ge=0, le=19, description="niceness of the worker processes and the embedded tritonserver "
                                 "`lipsync api` starts, so the API and UI answer promptly while jobs use every core (0 = same priority)")
    max_upload_mb: float = Field(500.0, description="largest request body, enforced while it streams in")
    max_archive_expanded_mb: float = Field(2000.0, gt=0, description="a batch ZIP's members may add up to this once "
                                           "extracted (each item's use counted: each job stores its inputs)")
    max_media_seconds: float = Field(1800.0, description="longest presenter video or speech accepted (measured when a file states no length)")
    max_fps: float = Field(MediaLimits.max_fps, description="highest presenter frame rate accepted (higher: refused, re-encode it)")
    max_frame_pixels: int = Field(MediaLimits.max_frame_pixels, description="largest presenter frame (width x height) accepted")
    max_active_jobs_per_tenant: int = Field(100, description="queued + running jobs a tenant may have; more -> 429")
    max_presenters_per_tenant: int = Field(100, ge=0, description="registered presenters a tenant may keep; more -> 429")
    max_presenter_mb_per_tenant: float = Field(5000.0, ge=0, description="stored presenter videos and photos a tenant may "
                                               "keep, in MB; more -> 429")
    retention_days: float = Field(7.0, description="inputs and results older than this are deleted, jobs marked expired")
    job_retries: int = Field(2, ge=0, description="re-runs of a job after a failure of storage, the database or the worker "
                             "(Triton being unavailable never uses one up)")
    retry_delay_s: float = Field(5.0, ge=0, description="wait before the first re-run; each next one waits 4 times longer "
                                 "(up to 5 min)")
    triton_outage_s: float = Field(900.0, ge=0, description="how long work waits for Triton (down, restarting, loading models) "
                                   "counted from its last answer, before a running job fails saying so; queued jobs wait "
                                   "until a server is back")
    orphan_after_s: float = Field(300.0, gt=0, description="a job queued this long that the queue does not hold (a Redis "
                                  "flush or failover, a failed enqueue) is enqueued again")
    retention_every_s: float = Field(3600.0, gt=0, description="how often the retention sweep runs (one worker of the "
                                     "deployment runs it)")
    purge_expired_days: float = Field(30.0, ge=0, description="expired jobs' rows are deleted this many days after their "
                                      "files (finished-job counters in /metrics keep counting them)")
    auto_migrate: bool = Field(True, description="`lipsync api` migrates the job database at start (under a lock); false: "
                               "only checks it, and `lipsync migrate` (a deployment's migration job) does it")
    worker_drain_s: float = Field(0.0, description="on SIGTERM a worker lets its running jobs finish for up to this long, "
                                                  "then hands the rest back (0 = hand back at once); give its pod a longer grace")
    stale_job_s: float = Field(60.0, description="a running job without a heartbeat for this long is re-queued (its worker died)")
    ops_key: str = Field("", description="operators' key (Authorization: Bearer): /readyz details and per-tenant /metrics; "
                                         "without it those show only what a load balancer or a scraper needs")
    header_timeout_s: float = Field(10.0, description="a request's line and headers must arrive within this (slow clients)")
    body_timeout_s: float = Field(30.0, description="longest pause inside a request body before the connection is closed")
    webhook_allow: str = Field("", description="URL prefixes completion webhooks may call, scheme://host[:port][/path/], "
                                               "comma-separated (none = webhooks off)")
    webhook_secret: str = Field("", description="master key from which each tenant's webhook signing secret is derived "
                                                "(a tenant reads its own at GET /v1/webhook-secret; none = webhooks off)")

    @property
    def media_limits(self) -> MediaLimits:
        return MediaLimits(max_fps=self.max_fps, max_frame_pixels=self.max_frame_pixels, max_seconds=self.max_media_seconds)

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{_absolute(self.data_dir / 'jobs.db')}"

    @property
    def storage(self) -> str:
        return self.storage_url or str(_absolute(self.data_dir / "files"))

    @property
    def triton(self) -> list[str]:
        return [u.strip() for u in self.triton_urls.split(",") if u.strip()]


@lru_cache(maxsize=16)
def _absolute(path: Path) -> Path:
    """`path.resolve()`, once per path: the database and storage locations are read on every request."""
    return path.resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    env_file = os.environ.get("LIPSYNC_SETTINGS_FILE")
    settings = Settings(_env_file=env_file) if env_file else Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings
