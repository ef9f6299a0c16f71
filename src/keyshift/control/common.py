"""What every control-plane use case shares: name validation, lookups by name or id, and `operation`,
the one way to run an audited mutation.

`operation(rt, action, ...)` opens a transaction, yields an `Op` (session + audit fields the use case
fills in), records the admin audit row inside the same transaction on success, and on failure rolls
back and records the refusal (`record_failure`) in its own transaction. Races surface as domain
errors: a lost optimistic update (StaleDataError) -> ConflictError "concurrent_update", a unique
constraint hit -> AlreadyExistsError.

Vault calls must not run inside an `operation` block: a local vault may open its own transaction,
and on SQLite (BEGIN IMMEDIATE) that would wait on the write lock this block holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from keyshift.control import audit_trail
from keyshift.db.models import ByokKey, Environment, Policy, Tenant, VaultRecord
from keyshift.errors import AlreadyExistsError, ConflictError, KeyshiftError, NotFoundError, UsageError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
_ID_SHAPE = re.compile(r"^[a-z]{2,5}_[0-9a-f]{20}\Z")

M = TypeVar("M")


def validate_name(kind: str, name: str) -> str:
    """Names: 1-100 chars of letters, digits, '.', '_', '-', starting with a letter or digit."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(
            f"invalid {kind} name {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            code="invalid_name",
        )
    if _ID_SHAPE.match(name):
        raise UsageError(f"invalid {kind} name {name!r}: it looks like an id", code="invalid_name")
    return name


def validate_region(rt: Runtime, region: str | None) -> str:
    value = rt.settings.default_region if region is None else region
    allowed = list(rt.settings.regions)
    if value not in allowed:
        raise UsageError(
            f"unknown region {value!r}; expected one of {', '.join(allowed)}", code="invalid_region"
        )
    return value


def iso(value: datetime | None) -> str | None:
    """A timestamp as every view gives it: ISO 8601 UTC with `Z` (keyshift.timefmt)."""
    return iso_z(value) if value is not None else None


# -- lookups (names or ids) -----------------------------------------------------------------------


def _one(session: Session, stmt: Any, kind: str, ref: str, code: str) -> Any:
    rows = session.scalars(stmt.limit(2)).all()
    if not rows:
        raise NotFoundError(f"{kind} {ref!r} not found", code=code)
    if len(rows) > 1:
        raise UsageError(f"{kind} name {ref!r} is ambiguous; use its id", code="ambiguous_name")
    return rows[0]


def get_tenant(session: Session, ref: str, *, lock: bool = False) -> Tenant:
    stmt = select(Tenant).where(or_(Tenant.id == ref, Tenant.name == ref))
    if lock:
        stmt = stmt.with_for_update()
    return _one(session, stmt, "tenant", ref, "tenant_not_found")  # type: ignore[no-any-return]


def get_environment(session: Session, ref: str, *, lock: bool = False) -> Environment:
    stmt = select(Environment).where(or_(Environment.id == ref, Environment.name == ref))
    if lock:
        stmt = stmt.with_for_update()
    return _one(session, stmt, "environment", ref, "environment_not_found")  # type: ignore[no-any-return]


def get_policy(session: Session, ref: str, *, tenant_id: str | None = None) -> Policy:
    stmt = select(Policy).where(or_(Policy.id == ref, Policy.name == ref), Policy.state != "deleted")
    if tenant_id is not None:
        stmt = stmt.where(Policy.tenant_id == tenant_id)
    return _one(session, stmt, "policy", ref, "policy_not_found")  # type: ignore[no-any-return]


def get_vault_record(session: Session, ref: str) -> VaultRecord:
    stmt = select(VaultRecord).where(
        or_(VaultRecord.id == ref, VaultRecord.name == ref), VaultRecord.state != "deleted"
    )
    return _one(session, stmt, "vault", ref, "vault_not_found")  # type: ignore[no-any-return]


def get_byok_key(session: Session, tenant: Tenant, ref: str) -> ByokKey:
    stmt = select(ByokKey).where(
        ByokKey.tenant_id == tenant.id,
        or_(ByokKey.id == ref, ByokKey.name == ref),
        ByokKey.state != "deleted",
    )
    return _one(session, stmt, "BYOK key", ref, "byok_key_not_found")  # type: ignore[no-any-return]


def platform_vault(rt: Runtime, session: Session) -> VaultRecord:
    row = session.scalars(select(VaultRecord).where(VaultRecord.name == rt.settings.platform_vault)).first()
    if row is None:
        raise ConflictError(
            f"the platform vault {rt.settings.platform_vault!r} is missing; run `keyshift init`",
            code="platform_vault_missing",
        )
    return row


# -- audited mutations ----------------------------------------------------------------------------


@dataclass
class Op:
    """One audited unit of work. Fill in target_id / tenant_id / details as they become known."""

    session: Session
    action: str
    target_type: str
    target_id: str | None = None
    tenant_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@contextmanager
def operation(
    rt: Runtime,
    action: str,
    *,
    target_type: str,
    target_id: str | None = None,
    tenant_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> Iterator[Op]:
    op: Op | None = None
    try:
        with rt.transaction() as session:
            op = Op(session, action, target_type, target_id, tenant_id, dict(details or {}))
            yield op
            session.flush()
            audit_trail.record(
                rt,
                session,
                action,
                target_type=target_type,
                target_id=op.target_id,
                tenant_id=op.tenant_id,
                details=op.details,
            )
    except KeyshiftError as err:
        _refused(rt, action, err, op, target_type, target_id, tenant_id)
        raise
    except StaleDataError:
        err2: KeyshiftError = ConflictError(
            f"{target_type} was changed by someone else at the same time; retry",
            code="concurrent_update",
        )
        _refused(rt, action, err2, op, target_type, target_id, tenant_id)
        raise err2 from None
    except SqlIntegrityError as exc:
        if "unique" in str(exc.orig).lower():
            err2 = AlreadyExistsError(
                f"{target_type} conflicts with an existing one (duplicate name or concurrent create)",
                code="already_exists",
            )
        else:  # e.g. a row it refers to was removed meanwhile
            err2 = ConflictError(
                f"{target_type} refers to something that changed meanwhile; retry", code="integrity_conflict"
            )
        _refused(rt, action, err2, op, target_type, target_id, tenant_id)
        raise err2 from None


def _refused(
    rt: Runtime,
    action: str,
    err: KeyshiftError,
    op: Op | None,
    target_type: str,
    target_id: str | None,
    tenant_id: str | None,
) -> None:
    # The refusal itself must still reach the caller even if recording it fails.
    with suppress(Exception):
        audit_trail.record_failure(
            rt,
            action,
            err,
            target_type=target_type,
            target_id=op.target_id if op else target_id,
            tenant_id=op.tenant_id if op else tenant_id,
            details=dict(op.details) if op else {},
        )


def refuse(rt: Runtime, action: str, err: KeyshiftError, **fields: Any) -> KeyshiftError:
    """Record a refusal that happened outside an `operation` block; returns the error to raise."""
    with suppress(Exception):
        audit_trail.record_failure(rt, action, err, **fields)
    return err
