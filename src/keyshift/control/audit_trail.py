"""The admin audit trail: append-only, one row per control-plane change or key operation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyshift.db.models import AdminAuditEvent
from keyshift.observability import events
from keyshift.observability.context import current_request_id
from keyshift.runtime import Runtime


def record(
    rt: Runtime,
    session: Session,
    action: str,
    *,
    target_type: str,
    target_id: str | None = None,
    tenant_id: str | None = None,
    outcome: str = "ok",
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AdminAuditEvent:
    """Add an audit row inside the caller's transaction (so it commits with the change).

    While an API request runs, its request id is added to the details (`request_id`).
    """
    request_id = current_request_id()
    if request_id is not None:
        details = {**(details or {}), "request_id": request_id}
    event = AdminAuditEvent(
        at=rt.clock.now(),
        principal=rt.principal,
        action=action,
        target_type=target_type,
        target_id=target_id,
        tenant_id=tenant_id,
        outcome=outcome,
        reason=reason,
        details=details or {},
    )
    session.add(event)
    events.note(
        session,
        action,
        {"target_id": target_id, "tenant_id": tenant_id, "reason": reason, "details": details or {}},
    )
    return event


def record_failure(rt: Runtime, action: str, error: Exception, **kwargs: Any) -> None:
    """Record a refused or failed action in its own transaction (the change itself rolled back)."""
    code = getattr(error, "code", type(error).__name__)
    with rt.transaction() as session:
        record(rt, session, action, outcome="error", reason=f"{code}: {error}", **kwargs)


def query(
    rt: Runtime,
    *,
    tenant_id: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Events in the order they happened (oldest first), or the newest `limit` newest first."""
    with rt.transaction() as session:
        order = AdminAuditEvent.id.desc() if newest_first else AdminAuditEvent.id
        stmt = select(AdminAuditEvent).order_by(order)
        if tenant_id is not None:
            stmt = stmt.where(AdminAuditEvent.tenant_id == tenant_id)
        if since is not None:
            stmt = stmt.where(AdminAuditEvent.at >= since)
        rows = session.scalars(stmt.limit(limit)).all()
        return [to_view(r) for r in rows]


def to_view(e: AdminAuditEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "principal": e.principal,
        "action": e.action,
        "target_type": e.target_type,
        "target_id": e.target_id,
        "tenant_id": e.tenant_id,
        "outcome": e.outcome,
        "reason": e.reason,
        "details": e.details,
    }


MAX_LIMIT = 100_000


def read(
    rt: Runtime,
    *,
    tenant: str | None = None,
    since: str | datetime | None = None,
    limit: int = 1000,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """`audit-trail [--tenant T] [--since TIME]`: tenant by name or id, time as ISO 8601."""
    from keyshift.clock import parse_time
    from keyshift.control.common import get_tenant
    from keyshift.errors import UsageError

    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_limit")
    when = parse_time(since) if isinstance(since, str) else since
    tenant_id = None
    if tenant is not None:
        with rt.transaction() as session:
            tenant_id = get_tenant(session, tenant).id
    return query(rt, tenant_id=tenant_id, since=when, limit=limit, newest_first=newest_first)
