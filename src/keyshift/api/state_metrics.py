"""Database state as metrics, read at scrape time by the API's `/metrics`.

`StateCollector(rt)` asks the state database, once per scrape, how many environments are in each
state and encryption mode, the health of each linked policy, the progress of running jobs and how
many workers are live or lost. A scrape that cannot reach the database answers
`keyshift_state_up 0` instead of failing the whole scrape. Only the API reports this (one process
is enough, and workers need not expose tenant policy ids).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from keyshift.runtime import Runtime

log = logging.getLogger("keyshift.metrics")

ENV_STATES = ("enabled", "disabled", "locked", "deleted")
ENC_MODES = ("platform", "byok", "cmk")
HEALTH_STATES = ("healthy", "warning", "unhealthy", "undetermined")


def state_registry(rt: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(rt))
    return registry


class StateCollector(Collector):
    """Control-plane state from the database of one runtime, read at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("keyshift_state_up", "1 if the state database answered this scrape.")
        try:
            families = list(self._families())
        except Exception as exc:
            log.warning("metrics: state database query failed: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        from keyshift.db.models import Environment, Job, Policy
        from keyshift.jobs.heartbeat import counts

        envs = GaugeMetricFamily(
            "keyshift_environments", "Environments by state and encryption mode.", labels=["state", "mode"]
        )
        health = GaugeMetricFamily(
            "keyshift_policy_health",
            "Last stored health of each policy that has linked environments (1 for its status).",
            labels=["policy", "status"],
        )
        checked = GaugeMetricFamily(
            "keyshift_policy_health_checked_timestamp_seconds",
            "When each linked policy's health was last checked (Unix time).",
            labels=["policy"],
        )
        jobs = GaugeMetricFamily("keyshift_jobs", "Jobs by kind and state.", labels=["kind", "state"])
        done = GaugeMetricFamily(
            "keyshift_job_items_done", "Items done of running jobs, by kind.", labels=["kind"]
        )
        total = GaugeMetricFamily(
            "keyshift_job_items_total", "Items planned of running jobs, by kind.", labels=["kind"]
        )
        workers = GaugeMetricFamily(
            "keyshift_workers", "Workers by heartbeat state (live, lost).", labels=["state"]
        )
        with self.rt.transaction() as s:
            seen: dict[tuple[str, str], int] = {(st, m): 0 for st in ENV_STATES for m in ENC_MODES}
            for state, mode, n in s.execute(
                select(Environment.state, Environment.enc_mode, func.count()).group_by(
                    Environment.state, Environment.enc_mode
                )
            ):
                seen[(state, mode)] = int(n)
            for (state, mode), n in sorted(seen.items()):
                envs.add_metric([state, mode], n)
            linked = select(Environment.policy_id).where(Environment.policy_id.is_not(None)).distinct()
            for pid, status, at in s.execute(
                select(Policy.id, Policy.health, Policy.health_checked_at).where(Policy.id.in_(linked))
            ):
                for st in HEALTH_STATES:
                    health.add_metric([pid, st], 1.0 if status == st else 0.0)
                if at is not None:
                    checked.add_metric([pid], at.timestamp())
            for kind, state, n in s.execute(
                select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
            ):
                jobs.add_metric([kind, state], int(n))
            for kind, d, t in s.execute(
                select(Job.kind, func.sum(Job.items_done), func.sum(Job.items_total))
                .where(Job.state == "running")
                .group_by(Job.kind)
            ):
                done.add_metric([kind], int(d or 0))
                total.add_metric([kind], int(t or 0))
        for state, n in counts(self.rt).items():
            workers.add_metric([state], n)
        yield from (envs, health, checked, jobs, done, total, workers)
