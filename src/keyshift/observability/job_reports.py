"""What a worker says about the jobs it drives: log lines, progress metrics, its heartbeat's job.

`JobReporter` is the worker's progress callback (`Worker(on_progress=...)`): it receives the job's
view after each unit of work and logs the start, each phase change, progress at most every
`progress_seconds`, and the end (succeeded / failed with the error code / cancelled) — each line
with job, kind, environment and phase. It also counts processed items (`keyshift_job_items_processed`),
keeps the recent rate (`keyshift_job_items_per_second`) and tells the heartbeat which job runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyshift.observability import metrics

log = logging.getLogger("keyshift.jobs")


@dataclass
class _Seen:
    state: str
    phase: str | None
    done: int
    logged_at: float
    rate_at: float
    rate_done: int


class JobReporter:
    def __init__(
        self,
        *,
        progress_seconds: float = 10.0,
        on_current: Callable[[str | None], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.progress_seconds = progress_seconds
        self.on_current = on_current
        self.monotonic = monotonic
        self._seen: dict[str, _Seen] = {}

    def __call__(self, view: dict[str, Any]) -> None:
        try:
            self._report(view)
        except Exception as exc:  # pragma: no cover - reporting never stops a job
            log.error("job report failed: %s", type(exc).__name__)

    def _fields(self, view: dict[str, Any]) -> dict[str, Any]:
        env = view.get("environment")
        return {
            "job": view.get("id"),
            "kind": view.get("kind"),
            # Job views name references as {"id", "name"}; log lines carry the id alone.
            "environment": env.get("id") if isinstance(env, dict) else env,
            "phase": view.get("phase"),
            "done": view.get("done"),
            "total": view.get("total"),
        }

    def _report(self, view: dict[str, Any]) -> None:
        job_id, kind = str(view["id"]), str(view.get("kind") or "unknown")
        state, phase, done = str(view["state"]), view.get("phase"), int(view.get("done") or 0)
        now = self.monotonic()
        seen = self._seen.get(job_id)
        if seen is None:
            seen = _Seen(state="", phase=None, done=done, logged_at=now, rate_at=now, rate_done=done)
            self._seen[job_id] = seen
            if state in ("pending", "running"):
                log.info("job started", extra={"event": "job.started", **self._fields(view)})
                if self.on_current is not None:
                    self.on_current(job_id)
        if done > seen.done:
            metrics.job_items.labels(kind).inc(done - seen.done)
        if now - seen.rate_at >= 1.0:
            metrics.job_rate.labels(kind).set((done - seen.rate_done) / (now - seen.rate_at))
            seen.rate_at, seen.rate_done = now, done
        if state in ("pending", "running"):
            if phase != seen.phase and phase is not None:
                log.info("job phase", extra={"event": "job.phase", **self._fields(view)})
                seen.logged_at = now
            elif now - seen.logged_at >= self.progress_seconds:
                log.info("job progress", extra={"event": "job.progress", **self._fields(view)})
                seen.logged_at = now
        else:
            self._finished(view, state, kind)
            del self._seen[job_id]
            return
        seen.state, seen.phase, seen.done = state, phase, done

    def _finished(self, view: dict[str, Any], state: str, kind: str) -> None:
        fields = {"event": f"job.{state}", **self._fields(view)}
        if state == "failed":
            error = view.get("error") or {}
            log.error("job failed", extra={**fields, "error_code": error.get("code")})
        else:
            log.info(f"job {state}", extra=fields)
        metrics.job_rate.labels(kind).set(0)
        if self.on_current is not None:
            self.on_current(None)
