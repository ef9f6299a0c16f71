"""Reading the admin audit trail a page at a time: newest first, filtered, keyset-paginated.

Pages are cut on the audit row id (ascending with time of insertion): `before=ID` gives the next
(older) page, `after=ID` the previous (newer) one. New events get higher ids, so pages already
handed out never shift while events keep arriving. Filters: tenant (its id, resolved and scoped by
the caller), environment (events on the environment itself and on its jobs), actor (a substring of
the principal label, e.g. a token id), action (exact, or a prefix ending in `*`), and a time range
`since <= at < until`. The request log (`api.request`, one row per HTTP request) is left out unless
asked for, or unless the action filter names it.

Tenant scoping is the caller's: `scope_tenant` (the caller's tenant, None for unscoped callers) is
always applied on top of the filters, so a scoped caller never sees another tenant's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from keyshift.db.models import AdminAuditEvent, ByokKey, Environment, Job, Policy, Tenant, VaultRecord
from keyshift.errors import UsageError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z

REQUEST_ACTION = "api.request"
DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclass(frozen=True)
class AuditFilter:
    tenant_id: str | None = None
    environment_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    include_requests: bool = False


def parse_bound(field: str, text: str | None) -> datetime | None:
    """A time-range bound given as ISO 8601 (a time without zone is UTC); the error names the field
    and does not echo the input."""
    if text is None or not text.strip():
        return None
    from keyshift.clock import parse_time

    try:
        return parse_time(text)
    except UsageError:
        raise UsageError(f"{field} is not an ISO 8601 time", code="invalid_time") from None


def search(
    rt: Runtime,
    flt: AuditFilter,
    *,
    scope_tenant: str | None,
    before: int | None = None,
    after: int | None = None,
    limit: int = DEFAULT_PAGE,
) -> dict[str, Any]:
    """One page of events, newest first: {"events", "next_before", "prev_after"} (None at an end)."""
    if not 1 <= limit <= MAX_PAGE:
        raise UsageError(f"limit must be between 1 and {MAX_PAGE}", code="invalid_limit")
    if flt.since is not None and flt.until is not None and flt.since >= flt.until:
        raise UsageError("since must be earlier than until", code="invalid_time_range")
    A = AdminAuditEvent
    with rt.transaction() as s:
        where = _conditions(s, flt, scope_tenant)
        if after is not None and before is None:  # the page just newer than `after`
            stmt = select(A).where(*where, A.id > after).order_by(A.id).limit(limit)
            rows = list(reversed(s.scalars(stmt).all()))
        else:  # older than `before` (and, given both, newer than `after`: the events between)
            cut = [A.id < before] if before is not None else []
            cut += [A.id > after] if after is not None else []
            rows = list(s.scalars(select(A).where(*where, *cut).order_by(A.id.desc()).limit(limit)))
        older = newer = False
        if rows:
            older = _exists(s, [*where, A.id < rows[-1].id])
            newer = _exists(s, [*where, A.id > rows[0].id])
        names = _Names(s)
        return {
            "events": [event_view(e, names) for e in rows],
            "next_before": rows[-1].id if older else None,
            "prev_after": rows[0].id if newer else None,
        }


def _exists(s: Session, where: list[ColumnElement[bool]]) -> bool:
    return s.scalars(select(AdminAuditEvent.id).where(*where).limit(1)).first() is not None


def _conditions(s: Session, flt: AuditFilter, scope_tenant: str | None) -> list[ColumnElement[bool]]:
    A = AdminAuditEvent
    out: list[ColumnElement[bool]] = []
    if scope_tenant is not None:
        out.append(A.tenant_id == scope_tenant)
    if flt.tenant_id is not None:
        out.append(A.tenant_id == flt.tenant_id)
    if flt.environment_id is not None:
        env = s.get(Environment, flt.environment_id)
        refs = [flt.environment_id] + ([env.name] if env is not None else [])
        jobs = select(Job.id).where(Job.environment_id == flt.environment_id)
        out.append(
            or_(
                and_(A.target_type == "environment", A.target_id.in_(refs)),
                and_(A.target_type == "job", A.target_id.in_(jobs)),
            )
        )
    if flt.actor:
        out.append(A.principal.contains(flt.actor, autoescape=True))
    action = flt.action or ""
    if action.endswith("*"):
        out.append(A.action.startswith(action[:-1], autoescape=True))
    elif action:
        out.append(A.action == action)
    names_requests = action == REQUEST_ACTION or (
        action.endswith("*") and REQUEST_ACTION.startswith(action[:-1])
    )
    if not (flt.include_requests or names_requests):
        out.append(A.action != REQUEST_ACTION)
    if flt.since is not None:
        out.append(A.at >= flt.since)
    if flt.until is not None:
        out.append(A.at < flt.until)
    return out


class _Names:
    """Names of the objects events point at (one lookup per object, cached for the page)."""

    MODELS: dict[str, Any] = {
        "environment": Environment,
        "tenant": Tenant,
        "policy": Policy,
        "vault": VaultRecord,
        "byok_key": ByokKey,
    }

    def __init__(self, s: Session) -> None:
        self.s = s
        self.cache: dict[tuple[str, str], str | None] = {}

    def name(self, kind: str, ref: str | None) -> str | None:
        if not ref:
            return None
        key = (kind, ref)
        if key not in self.cache:
            self.cache[key] = self._lookup(kind, ref)
        return self.cache[key]

    def _lookup(self, kind: str, ref: str) -> str | None:
        if kind == "job":
            job = self.s.get(Job, ref) if len(ref) <= 40 else None
            if job is None:
                return None
            env = self.s.get(Environment, job.environment_id) if job.environment_id else None
            return f"{job.kind} of {env.name}" if env is not None else job.kind
        model = self.MODELS.get(kind)
        if model is None or len(ref) > 40:
            return None
        row = self.s.get(model, ref)
        return getattr(row, "name", None) if row is not None else None


def event_view(e: AdminAuditEvent, names: _Names) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso_z(e.at),
        "actor": e.principal,
        "action": e.action,
        "target": {"type": e.target_type, "id": e.target_id, "name": names.name(e.target_type, e.target_id)},
        "tenant": {"id": e.tenant_id, "name": names.name("tenant", e.tenant_id)} if e.tenant_id else None,
        "outcome": e.outcome,
        "reason": e.reason,
        "details": e.details or {},
    }
