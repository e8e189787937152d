"""The task queue: Huey, embedded (SQLite file in the data directory) or Redis (`LIPSYNC_QUEUE_URL=
redis://...`), as one object built from Settings and handed to what needs it (the API enqueues, a
worker consumes, the runner re-queues). Nothing is read or built at import.

Tasks: run a job (its re-runs are the runner's decision, scheduled here with a delay), track a
registered presenter's faces, deliver a webhook. The sweeps (retention, orphaned jobs) are not
Huey's periodic tasks, which every consumer would run: sweeps.py runs each once per deployment.
Huey finds a task by its name, so every process that builds a JobQueue knows the same tasks.
"""
from __future__ import annotations

from huey import RedisHuey, SqliteHuey
from huey.api import Huey
from huey.storage import SqliteStorage

from .presenters import prepare
from .runner import run_job
from .settings import Settings
from .webhooks import deliver


class _QueueFileStorage(SqliteStorage):
    """Huey's SQLite queue with `synchronous=NORMAL`, as the jobs database (db.py): in WAL mode an
    enqueue commits without an fsync (Huey leaves SQLite's FULL, an fsync per submit: about a tenth
    of a submit's time in a burst). A power cut may lose the last enqueues; a crash loses nothing."""

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=NORMAL")
        return conn


class _QueueFileHuey(SqliteHuey):
    storage_class = _QueueFileStorage


def make_huey(settings: Settings) -> Huey:
    if settings.queue_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(settings.queue_name, url=settings.queue_url)
    return _QueueFileHuey(settings.queue_name, filename=str((settings.data_dir / "queue.db").resolve()), timeout=30)


class JobQueue:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.huey = make_huey(settings)
        self._run_job = self.huey.task(name="run_job")(self._run_job_task)
        self._deliver = self.huey.task(retries=5, retry_delay=10, name="deliver_webhook")(self._deliver_task)
        self._prepare = self.huey.task(retries=settings.job_retries, retry_delay=settings.retry_delay_s,
                                       name="prepare_presenter")(self._prepare_task)

    def enqueue_job(self, job_id: str, delay: float = 0.0) -> None:
        if delay > 0:
            self._run_job.schedule((job_id,), delay=delay)
        else:
            self._run_job(job_id)

    def waiting_job_ids(self) -> set[str]:
        """The jobs the queue holds (pending or scheduled): a queued job not among them is orphaned."""
        tasks = [*self.huey.pending(), *self.huey.scheduled()]
        return {task.args[0] for task in tasks if task.name == "run_job" and task.args}

    def prepare_presenter(self, presenter_id: str) -> None:
        self._prepare(presenter_id)

    def deliver_webhook(self, job_id: str) -> None:
        self._deliver(job_id)

    def depth(self) -> int:
        """Tasks waiting (what an autoscaler of workers reads)."""
        return int(self.huey.pending_count())

    def _run_job_task(self, job_id: str) -> None:
        run_job(job_id, self)

    def _prepare_task(self, presenter_id: str) -> None:
        prepare(presenter_id, self.settings)

    def _deliver_task(self, job_id: str) -> None:
        deliver(job_id, self.settings)
