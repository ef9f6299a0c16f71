"""The environment list a page at a time: filters, a name search and keyset pagination on the name
(environment names are unique), in name order. `after=NAME` gives the next page, `before=NAME` the
previous one; rows have the shape of `environments.list_environments`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select

from keyshift.control.environments import ENV_TYPES, environment_summary
from keyshift.db.models import Environment
from keyshift.errors import UsageError
from keyshift.runtime import Runtime

STATES = ("enabled", "disabled", "locked")
MODES = ("platform", "byok", "cmk")
DEFAULT_PAGE = 25
MAX_PAGE = 200


@dataclass(frozen=True)
class EnvFilter:
    tenant_id: str | None = None
    q: str | None = None  # substring of the name (case-insensitive)
    region: str | None = None
    type: str | None = None
    state: str | None = None
    mode: str | None = None
    with_policies: bool = False


def _check(flt: EnvFilter) -> None:
    checks = (("type", flt.type, ENV_TYPES), ("state", flt.state, STATES), ("mode", flt.mode, MODES))
    for field, value, allowed in checks:
        if value is not None and value not in allowed:
            raise UsageError(f"{field} must be one of {', '.join(allowed)}", code="invalid_filter")


def _conditions(flt: EnvFilter, scope_tenant: str | None) -> list[ColumnElement[bool]]:
    E = Environment
    out: list[ColumnElement[bool]] = [E.state != "deleted"]
    for column, value in (
        (E.tenant_id, scope_tenant),
        (E.tenant_id, flt.tenant_id),
        (E.region, flt.region),
        (E.type, flt.type),
        (E.state, flt.state),
        (E.enc_mode, flt.mode),
    ):
        if value is not None:
            out.append(column == value)
    if flt.q:
        out.append(E.name.icontains(flt.q, autoescape=True))
    if flt.with_policies:
        out.append(E.policy_id.is_not(None))
    return out


def search(
    rt: Runtime,
    flt: EnvFilter,
    *,
    scope_tenant: str | None,
    after: str | None = None,
    before: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> dict[str, Any]:
    """{"environments", "next_after", "prev_before"} (the cursors are None at either end)."""
    if not 1 <= limit <= MAX_PAGE:
        raise UsageError(f"limit must be between 1 and {MAX_PAGE}", code="invalid_limit")
    if after is not None and before is not None:
        raise UsageError("give either after or before, not both", code="invalid_argument")
    _check(flt)
    E = Environment
    with rt.transaction() as s:
        where = _conditions(flt, scope_tenant)
        if before is not None:
            stmt = select(E).where(*where, E.name < before).order_by(E.name.desc()).limit(limit)
            rows = list(reversed(s.scalars(stmt).all()))
        else:
            cut = [E.name > after] if after is not None else []
            rows = list(s.scalars(select(E).where(*where, *cut).order_by(E.name).limit(limit)))

        def exists(*more: ColumnElement[bool]) -> bool:
            return s.scalars(select(E.id).where(*where, *more).limit(1)).first() is not None

        out = [environment_summary(rt, s, env) for env in rows]
        return {
            "environments": out,
            "next_after": rows[-1].name if rows and exists(E.name > rows[-1].name) else None,
            "prev_before": rows[0].name if rows and exists(E.name < rows[0].name) else None,
        }
