"""The admin audit trail: append-only, one row per control-plane change or key operation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from keyshift.control import refs
from keyshift.db.models import AdminAuditEvent, ByokKey, Environment, Policy, Tenant, VaultRecord
from keyshift.observability import events
from keyshift.observability.context import current_request_id
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z


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
        return views(session, rows)


# Target types whose rows have a name; a vault's target may have been recorded by name.
_NAMED = {"tenant": Tenant, "environment": Environment, "policy": Policy, "byok_key": ByokKey}


def views(session: Session, rows: Sequence[AdminAuditEvent]) -> list[dict[str, Any]]:
    """Events with their `tenant` and `target` as {"id", "name"} references (names looked up in
    one query per kind; `name` is null for targets without one, such as jobs and tokens)."""
    ids: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.tenant_id:
            ids["tenant"].add(r.tenant_id)
        if r.target_id and (r.target_type in _NAMED or r.target_type == "vault"):
            ids[r.target_type].add(r.target_id)
    known = {kind: refs.names(session, model, ids[kind]) for kind, model in _NAMED.items()}
    vaults: dict[str, tuple[str, str]] = {}
    if ids["vault"]:
        found = session.execute(
            select(VaultRecord.id, VaultRecord.name).where(
                or_(VaultRecord.id.in_(ids["vault"]), VaultRecord.name.in_(ids["vault"]))
            )
        ).all()
        for vid, vname in found:
            vaults[vid] = vaults[vname] = (vid, vname)
    out = []
    for r in rows:
        target: dict[str, Any] | None = None
        if r.target_id is not None:
            if r.target_type == "vault" and r.target_id in vaults:
                vid, vname = vaults[r.target_id]
                target = {"id": vid, "name": vname}
            else:
                name = known.get(r.target_type, {}).get(r.target_id)
                target = {"id": r.target_id, "name": refs.display_name(name)}
        tenant = refs.ref(r.tenant_id, known["tenant"].get(r.tenant_id or ""))
        out.append(to_view(r, tenant=tenant, target=target))
    return out


def to_view(
    e: AdminAuditEvent, *, tenant: dict[str, Any] | None, target: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso_z(e.at),
        "principal": e.principal,
        "action": e.action,
        "target_type": e.target_type,
        "target": target,
        "tenant": tenant,
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
