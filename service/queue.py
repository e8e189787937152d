"""The task queue: Huey, embedded (SQLite file in the data directory) or Redis (`LIPSYNC_QUEUE_URL=
redis://...`), one API. Tasks: run a job (bounded retries on transient errors), deliver a webhook,
and the hourly retention sweep."""
from __future__ import annotations

from huey import RedisHuey, SqliteHuey, crontab

from .settings import get_settings

settings = get_settings()


def _make_huey():
    if settings.queue_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(settings.queue_name, url=settings.queue_url)
    return SqliteHuey(settings.queue_name, filename=str((settings.data_dir / "queue.db").resolve()), timeout=30)


huey = _make_huey()


@huey.task(retries=settings.job_retries, retry_delay=settings.retry_delay_s, context=True)
def run_job_task(job_id: str, task=None) -> None:
    from .runner import run_job

    run_job(job_id, last_attempt=task is None or task.retries == 0)


@huey.task(retries=5, retry_delay=10)
def deliver_webhook_task(job_id: str) -> None:
    from .webhooks import deliver

    deliver(job_id)


@huey.periodic_task(crontab(minute="17"))
def retention_task() -> None:
    from .retention import expire_old

    expire_old(settings)


def enqueue_job(job_id: str) -> None:
    run_job_task(job_id)


def queue_depth() -> int:
    return int(huey.pending_count())
