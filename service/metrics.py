"""Prometheus metrics, computed from the job table at scrape time (workers run in other processes,
so the database is the one place that sees every job): jobs now in each state, counters of
finished jobs by outcome, run and queue durations, queue depth, frames/s of recent jobs."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from sqlalchemy import func, select

from .db import FinishedCount, Job, JobStatus, session_scope, utcnow
from .settings import Settings

if TYPE_CHECKING:
    from .queue import JobQueue

RECENT = dt.timedelta(minutes=10)


class JobCollector:
    """`by_tenant`: series per tenant (tenant names are for operators: the public scrape has totals)."""

    def __init__(self, settings: Settings, queue: "JobQueue", by_tenant: bool):
        self.settings, self.queue = settings, queue
        self.by_tenant = by_tenant

    def collect(self):
        tenant = ["tenant"] if self.by_tenant else []
        by_state = GaugeMetricFamily("lipsync_jobs", "Jobs now in each state" + " and tenant" * self.by_tenant, labels=[*tenant, "status"])
        finished = CounterMetricFamily("lipsync_jobs_finished", "Jobs finished, by outcome (deleting a job does not lower it)",
                                       labels=[*tenant, "status"])
        run = SummaryMetricFamily("lipsync_job_run_seconds", "Run time of succeeded jobs", labels=tenant)
        wait = SummaryMetricFamily("lipsync_job_queue_seconds", "Time succeeded jobs waited in the queue", labels=tenant)
        depth = GaugeMetricFamily("lipsync_queue_depth", "Tasks waiting in the queue")
        fps = GaugeMetricFamily("lipsync_frames_per_second", "Frames generated per second of job run time, jobs finished in the last 10 minutes")
        with session_scope(self.settings.database) as s:
            group = [Job.tenant] if self.by_tenant else []
            for *labels, count in s.execute(select(*group, Job.status, func.count()).group_by(*group, Job.status)):
                by_state.add_metric(labels, count)
            # Counted as jobs finish (FinishedCount): no job rows are loaded per scrape.
            group = [FinishedCount.tenant] if self.by_tenant else []
            for *labels, status, count, run_s, queue_s in s.execute(
                    select(*group, FinishedCount.status, func.sum(FinishedCount.jobs), func.sum(FinishedCount.run_s),
                           func.sum(FinishedCount.queue_s)).group_by(*group, FinishedCount.status)):
                finished.add_metric([*labels, status], count)
                if status == JobStatus.SUCCEEDED:
                    run.add_metric(labels, count, run_s or 0.0)
                    wait.add_metric(labels, count, queue_s or 0.0)
            frames, seconds = s.execute(select(func.sum(Job.frames), func.sum(Job.run_s))
                                        .where(Job.status == JobStatus.SUCCEEDED, Job.finished_at >= utcnow() - RECENT)).one()
        try:
            depth.add_metric([], self.queue.depth())
        except Exception:
            pass
        fps.add_metric([], (frames or 0) / seconds if seconds else 0.0)
        yield from (by_state, finished, run, wait, depth, fps)


def registry_for(settings: Settings, queue: "JobQueue", by_tenant: bool = False) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(JobCollector(settings, queue, by_tenant))
    return registry
