"""Audited events, seen once they are committed: a log line and a counter for each.

`control.audit_trail.record` notes every admin audit entry on its session; when that session's
transaction commits, the entries that matter to an operator are logged (logger
`keyshift.events`, with environment, policy, reason and evidence as structured fields) and
counted (revocations, re-enables, scheduled deletions, deletions, finished jobs, policy health;
finished jobs are only counted: the worker logs them with their phase).
An entry whose transaction rolls back is neither logged nor counted.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from keyshift.observability import metrics

log = logging.getLogger("keyshift.events")

_KEY = "keyshift.observability.audit_events"

# Audit details copied into the log line (never values or keys: ids, codes, counts, key references).
_DETAIL_FIELDS = (
    "source",
    "policy",
    "kind",
    "environment",
    "key",
    "identity",
    "deks_checked",
    "delete_after",
    "days",
    "status",
    "deletion_cancelled",
)


def note(session: Session, action: str, fields: dict[str, Any]) -> None:
    """Remember an audit entry until its transaction commits (called by audit_trail.record)."""
    if action in _HANDLERS:
        session.info.setdefault(_KEY, []).append((action, fields))


def _details(fields: dict[str, Any]) -> dict[str, Any]:
    details = fields.get("details") or {}
    return {k: details[k] for k in _DETAIL_FIELDS if k in details and details[k] is not None}


def _env_fields(f: dict[str, Any], event_name: str) -> dict[str, Any]:
    return {"event": event_name, "environment": f.get("target_id"), "tenant": f.get("tenant_id")}


def _disabled(f: dict[str, Any]) -> None:
    d = f.get("details") or {}
    source = str(d.get("source") or "unknown")
    metrics.revocations.labels(source if source in ("monitor", "data_plane") else "other").inc()
    log.warning(
        "environment disabled: key revoked",
        extra={
            "event": "environment.disabled",
            "environment": f.get("target_id"),
            "tenant": f.get("tenant_id"),
            "evidence": f.get("reason"),
            **_details(f),
        },
    )


def _reenabled(f: dict[str, Any]) -> None:
    metrics.reenables.inc()
    log.info(
        "environment re-enabled: key proven usable",
        extra={
            "event": "environment.re_enabled",
            "environment": f.get("target_id"),
            "tenant": f.get("tenant_id"),
            "evidence": f.get("reason"),
            **_details(f),
        },
    )


def _scheduled(f: dict[str, Any]) -> None:
    metrics.deletions_scheduled.inc()
    log.warning(
        "environment deletion scheduled",
        extra={
            "event": "environment.deletion_scheduled",
            "environment": f.get("target_id"),
            "tenant": f.get("tenant_id"),
            **_details(f),
        },
    )


def _deleted(f: dict[str, Any]) -> None:
    metrics.environments_deleted.inc()
    log.warning(
        "environment deleted after its scheduled deletion",
        extra={
            "event": "environment.deleted",
            "environment": f.get("target_id"),
            "tenant": f.get("tenant_id"),
        },
    )


def _job_end(state: str) -> Any:
    # Counted here, where the end is committed; the worker's JobReporter writes the log line
    # (it knows the phase and the progress).
    def handle(f: dict[str, Any]) -> None:
        kind = str((f.get("details") or {}).get("kind") or "unknown")
        metrics.jobs_finished.labels(kind, state).inc()

    return handle


def _health(f: dict[str, Any]) -> None:
    d = f.get("details") or {}
    status = str(d.get("health") or "undetermined")
    metrics.policy_health_changes.labels(status).inc()
    level = logging.WARNING if status in ("unhealthy", "warning") else logging.INFO
    log.log(
        level,
        "policy health stored",
        extra={
            "event": "policy.health",
            "policy": f.get("target_id"),
            "tenant": f.get("tenant_id"),
            "status": status,
            "evidence": "; ".join(str(r) for r in d.get("reasons") or []),
        },
    )


_HANDLERS = {
    "environment.disable": _disabled,
    "environment.re_enable": _reenabled,
    "environment.deletion.scheduled": _scheduled,
    "environment.delete": _deleted,
    "job.succeeded": _job_end("succeeded"),
    "job.failed": _job_end("failed"),
    "job.cancelled": _job_end("cancelled"),
    "policy.health": _health,
}


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending = session.info.pop(_KEY, None)
    for action, fields in pending or ():
        try:
            _HANDLERS[action](fields)
        except Exception as exc:  # observability never breaks the work it observes
            log.error("could not report audit event %s: %s", action, type(exc).__name__)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_KEY, None)
