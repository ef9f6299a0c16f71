"""Vault and key administration use cases (what `keyshift vault ...` / `key ...` and the API call).

Local vaults are created here; key commands work on any registered vault whose adapter implements
`KeyManager`. Adapters that write their own admin audit records inside their transactions set
`audits_key_admin = True` (the local vault does); for the others this module records the outcome.
Views never contain key material.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.control.common import iso
from keyshift.db.models import Tenant, VaultRecord
from keyshift.db.types import new_id
from keyshift.errors import AlreadyExistsError, ConflictError, KeyshiftError, UsageError
from keyshift.runtime import Runtime
from keyshift.vaults.base import (
    KeyInfo,
    KeyManager,
    KeyRef,
    KeyVault,
    Permission,
    parse_permissions,
)
from keyshift.vaults.local_crypto import validate_type_size
from keyshift.vaults.registry import find_vault_record

T = TypeVar("T")
SOFT_DELETE_MIN, SOFT_DELETE_MAX = 7, 90
VAULT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")


# -- vaults --------------------------------------------------------------------------------------
def validate_soft_delete_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not SOFT_DELETE_MIN <= days <= SOFT_DELETE_MAX:
        raise UsageError(
            f"soft delete retention must be {SOFT_DELETE_MIN}-{SOFT_DELETE_MAX} days, got {days!r}",
            code="invalid_retention",
        )
    return days


def create_local_vault(
    rt: Runtime,
    name: str,
    *,
    soft_delete_days: int = 90,
    purge_protection: bool = False,
    owner: str = "customer",
    tenant_id: str | None = None,
) -> dict[str, Any]:
    """Register a new local vault. Names are unique across all vaults."""
    try:
        if not isinstance(name, str) or not VAULT_NAME_RE.match(name):
            raise UsageError(
                f"invalid vault name {name!r}: 1-100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
                code="invalid_name",
            )
        validate_soft_delete_days(soft_delete_days)
        if owner not in ("customer", "platform"):
            raise UsageError(f"invalid vault owner {owner!r}")
        with rt.transaction() as session:
            if session.scalars(select(VaultRecord.id).where(VaultRecord.name == name)).first():
                raise AlreadyExistsError(f"vault {name!r} already exists")
            rec = VaultRecord(
                id=new_id("vlt"),
                name=name,
                kind="local",
                owner=owner,
                tenant_id=tenant_id,
                config={},
                soft_delete_days=soft_delete_days,
                purge_protection=purge_protection,
                state="active",
                created_at=rt.clock.now(),
            )
            session.add(rec)
            session.flush()
            tenant_name = tenant_names(session, [tenant_id]).get(tenant_id or "")
            audit_trail.record(
                rt,
                session,
                "vault.create",
                target_type="vault",
                target_id=name,
                tenant_id=tenant_id,
                details={
                    "kind": "local",
                    "soft_delete_days": soft_delete_days,
                    "purge_protection": purge_protection,
                    "owner": owner,
                },
            )
            view = vault_view(rec, tenant_name)
        return view
    except DbIntegrityError:
        err: KeyshiftError = AlreadyExistsError(f"vault {name!r} already exists")
    except KeyshiftError as exc:
        err = exc
    audit_trail.record_failure(rt, "vault.create", err, target_type="vault", target_id=str(name)[:200])
    raise err


def vault_view(rec: VaultRecord, tenant_name: str | None = None) -> dict[str, Any]:
    """A vault as every interface shows it; `tenant` is a reference {"id", "name"} or null."""
    return {
        "id": rec.id,
        "name": rec.name,
        "kind": rec.kind,
        "owner": rec.owner,
        "tenant": {"id": rec.tenant_id, "name": tenant_name} if rec.tenant_id else None,
        "soft_delete_days": rec.soft_delete_days,
        "purge_protection": rec.purge_protection,
        "state": rec.state,
        "delete_after": iso(rec.delete_after),
        "created_at": iso(rec.created_at),
    }


def tenant_names(session: Session, ids: Iterable[str | None]) -> dict[str, str]:
    """Tenant id -> name for the given ids (for references in views)."""
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    rows = session.execute(select(Tenant.id, Tenant.name).where(Tenant.id.in_(wanted))).all()
    return {tid: name for tid, name in rows}


def view_of(rt: Runtime, rec: VaultRecord) -> dict[str, Any]:
    """vault_view with the tenant's name looked up."""
    with rt.transaction() as session:
        return vault_view(rec, tenant_names(session, [rec.tenant_id]).get(rec.tenant_id or ""))


def list_vaults(rt: Runtime) -> list[dict[str, Any]]:
    with rt.transaction() as session:
        rows = session.scalars(
            select(VaultRecord).where(VaultRecord.state != "deleted").order_by(VaultRecord.name)
        ).all()
        names = tenant_names(session, [r.tenant_id for r in rows])
        return [vault_view(r, names.get(r.tenant_id or "")) for r in rows]


def show_vault(rt: Runtime, vault: str) -> dict[str, Any]:
    """The vault, its reachability (via info()) and its keys when the adapter can list them."""
    rec = find_vault_record(rt, vault)
    view = view_of(rt, rec)
    adapter: KeyVault | None = None
    try:
        adapter = rt.vault(rec.name)
        info = adapter.info()
        view["reachable"] = info.reachable
        view["detail"] = info.detail
        view["symmetric_only"] = info.symmetric_only
    except KeyshiftError as exc:
        view["reachable"] = False
        view["detail"] = f"{exc.code}: {exc.message}"
    view["key_management"] = adapter is not None and isinstance(adapter, KeyManager)
    keys: list[dict[str, Any]] = []
    if adapter is not None and isinstance(adapter, KeyManager) and view["reachable"]:
        try:
            keys = [key_view(k, vault={"id": rec.id, "name": rec.name}) for k in adapter.list_keys()]
        except KeyshiftError as exc:
            view["detail"] = f"{exc.code}: {exc.message}"
    view["keys"] = keys
    return view


# -- keys ----------------------------------------------------------------------------------------
def vault_ref(rt: Runtime, vault: str) -> dict[str, Any]:
    """The `{"id", "name"}` reference of a registered vault given by name or id."""
    rec = find_vault_record(rt, vault)
    return {"id": rec.id, "name": rec.name}


def key_view_of(
    rt: Runtime, info: KeyInfo, grants: dict[str, frozenset[Permission]] | None = None
) -> dict[str, Any]:
    """key_view with the key's vault looked up for its reference."""
    return key_view(info, grants, vault=vault_ref(rt, info.ref.vault))


def key_view(
    info: KeyInfo,
    grants: dict[str, frozenset[Permission]] | None = None,
    *,
    vault: dict[str, Any],
) -> dict[str, Any]:
    """A key as every interface shows it; `vault` is the vault's {"id", "name"} reference."""
    view: dict[str, Any] = {
        "vault": vault,
        "name": info.ref.name,
        "type": info.key_type.value,
        "size": info.size,
        "enabled": info.enabled,
        "state": "deleted" if info.deleted else ("enabled" if info.enabled else "disabled"),
        "current_version": info.current_version,
        "deleted": info.deleted,
        "purge_after": iso(info.purge_after),
        "versions": [
            {
                "version": v.version,
                "enabled": v.enabled,
                "not_before": iso(v.not_before),
                "expires": iso(v.expires),
                "created_at": iso(v.created_at),
            }
            for v in info.versions
        ],
    }
    if grants is not None:
        view["grants"] = [
            {"identity": ident, "permissions": sorted(p.value for p in perms)}
            for ident, perms in sorted(grants.items())
        ]
    return view


def key_manager(rt: Runtime, vault: str) -> tuple[str, KeyManager]:
    """The vault's adapter as a KeyManager, or ConflictError if its kind cannot manage keys."""
    rec = find_vault_record(rt, vault)
    adapter = rt.vault(rec.name)
    if not isinstance(adapter, KeyManager):
        raise ConflictError(
            f"vault kind {rec.kind} does not support key management", code="unsupported_operation"
        )
    return rec.name, adapter


def _admin(rt: Runtime, vault: str, name: str, action: str, fn: Callable[[KeyManager], T]) -> T:
    """Run a key admin action; audit it here unless the adapter audits itself."""
    target = f"{vault}/{name}"
    try:
        vname, km = key_manager(rt, vault)
    except KeyshiftError as exc:
        audit_trail.record_failure(rt, action, exc, target_type="key", target_id=target)
        raise
    target = f"{vname}/{name}"
    if getattr(km, "audits_key_admin", False):
        return fn(km)
    try:
        result = fn(km)
    except KeyshiftError as exc:
        audit_trail.record_failure(rt, action, exc, target_type="key", target_id=target)
        raise
    with rt.transaction() as session:
        audit_trail.record(
            rt, session, action, target_type="key", target_id=target, details={"vault": vname, "key": name}
        )
    return result


def create_key(
    rt: Runtime,
    vault: str,
    name: str,
    key_type: str,
    size: int,
    *,
    not_before: datetime | None = None,
    expires: datetime | None = None,
) -> dict[str, Any]:
    try:  # type and size are checked (and a refusal audited) before any adapter is involved
        kt = validate_type_size(key_type, size)
    except UsageError as exc:
        audit_trail.record_failure(
            rt, "key.create", exc, target_type="key", target_id=f"{vault}/{name}"[:200]
        )
        raise
    info = _admin(
        rt,
        vault,
        name,
        "key.create",
        lambda km: km.create_key(name, kt, size, not_before=not_before, expires=expires),
    )
    return key_view_of(rt, info)


def rotate_key(rt: Runtime, vault: str, name: str) -> dict[str, Any]:
    return key_view_of(rt, _admin(rt, vault, name, "key.rotate", lambda km: km.rotate_key(name)))


def _gated(
    rt: Runtime, action: str, vault: str, name: str, force: bool, fn: Callable[[KeyManager], T], **scope: Any
) -> T:
    """Run a key admin action past the retirement gate (control/retire.py): refused with
    `key_in_use` while the key still covers data, unless forced (then audited as forced)."""
    from keyshift.control import retire

    forced = retire.gate(rt, action, vault, name, force=force, **scope)
    result = _admin(rt, vault, name, action, fn)
    if forced is not None:
        retire.audit_forced(rt, action, forced, version=scope.get("version"))
    return result


def set_key_enabled(
    rt: Runtime,
    vault: str,
    name: str,
    enabled: bool,
    *,
    version: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    action = "key.enable" if enabled else "key.disable"
    run: Callable[[KeyManager], KeyInfo] = lambda km: km.set_enabled(name, enabled, version=version)  # noqa: E731
    if enabled:
        return key_view_of(rt, _admin(rt, vault, name, action, run))
    return key_view_of(rt, _gated(rt, action, vault, name, force, run, version=version))


def delete_key(rt: Runtime, vault: str, name: str, *, force: bool = False) -> dict[str, Any]:
    return key_view_of(rt, _gated(rt, "key.delete", vault, name, force, lambda km: km.delete_key(name)))


def recover_key(rt: Runtime, vault: str, name: str) -> dict[str, Any]:
    return key_view_of(rt, _admin(rt, vault, name, "key.recover", lambda km: km.recover_key(name)))


def purge_key(rt: Runtime, vault: str, name: str, *, force: bool = False) -> dict[str, Any]:
    _gated(rt, "key.purge", vault, name, force, lambda km: km.purge_key(name))
    return {"vault": vault_ref(rt, vault), "name": name, "purged": True}


def grant_key(
    rt: Runtime, vault: str, name: str, identity: str, permissions: str | frozenset[Permission]
) -> dict[str, Any]:
    try:
        perms = parse_permissions(permissions) if isinstance(permissions, str) else frozenset(permissions)
    except UsageError as exc:  # bad permission names never reach the adapter; audit the refusal here
        audit_trail.record_failure(rt, "key.grant", exc, target_type="key", target_id=f"{vault}/{name}"[:200])
        raise
    _admin(rt, vault, name, "key.grant", lambda km: km.grant(name, identity, perms))
    return {
        "vault": vault_ref(rt, vault),
        "name": name,
        "identity": identity,
        "permissions": sorted(p.value for p in perms),
    }


def revoke_key_grant(
    rt: Runtime, vault: str, name: str, identity: str, *, force: bool = False
) -> dict[str, Any]:
    revoke: Callable[[KeyManager], None] = lambda km: km.revoke_grant(name, identity)  # noqa: E731
    _gated(rt, "key.revoke_grant", vault, name, force, revoke, identity=identity)
    return {"vault": vault_ref(rt, vault), "name": name, "identity": identity, "revoked": True}


def list_keys(rt: Runtime, vault: str) -> list[dict[str, Any]]:
    vname, km = key_manager(rt, vault)
    vref = vault_ref(rt, vname)
    return [key_view(k, vault=vref) for k in km.list_keys()]


def show_key(rt: Runtime, vault: str, name: str) -> dict[str, Any]:
    vname, km = key_manager(rt, vault)
    adapter = rt.vault(vname)
    info = adapter.describe(KeyRef(vname, name))
    lister = getattr(km, "list_grants", None)
    grants = lister(name) if callable(lister) else None
    return key_view(info, grants, vault=vault_ref(rt, vname))


def erase_local_vault(rt: Runtime, vault: str, *, reason: str | None = None) -> dict[str, Any]:
    """Destroy a local vault: erase every key, version and grant, and mark the vault deleted.

    For scheduled deletions (e.g. a tenant's BYOK vault after its retention); the caller decides
    when it is due. The platform vault is refused. One transaction; audited as `vault.delete`.
    """
    from sqlalchemy import delete

    from keyshift.db.models import LocalKey, LocalKeyGrant, LocalKeyVersion

    rec = find_vault_record(rt, vault)
    try:
        if rec.kind != "local":
            raise ConflictError(f"vault {rec.name!r} is {rec.kind}, not local", code="unsupported_operation")
        if rec.name == rt.settings.platform_vault:
            raise ConflictError("the platform vault cannot be deleted", code="platform_vault")
        with rt.transaction() as session:
            row = session.get(VaultRecord, rec.id, with_for_update=True)
            if row is None or row.state == "deleted":
                raise ConflictError(f"vault {rec.name!r} is already deleted", code="vault_deleted")
            key_ids = select(LocalKey.id).where(LocalKey.vault_id == rec.id).scalar_subquery()
            session.execute(delete(LocalKeyGrant).where(LocalKeyGrant.key_id.in_(key_ids)))
            session.execute(delete(LocalKeyVersion).where(LocalKeyVersion.key_id.in_(key_ids)))
            erased = session.execute(delete(LocalKey).where(LocalKey.vault_id == rec.id)).rowcount  # type: ignore[attr-defined]
            row.state = "deleted"
            session.flush()
            audit_trail.record(
                rt,
                session,
                "vault.delete",
                target_type="vault",
                target_id=rec.name,
                tenant_id=rec.tenant_id,
                reason=reason,
                details={"keys_erased": erased},
            )
            view = vault_view(row, tenant_names(session, [row.tenant_id]).get(row.tenant_id or ""))
    except KeyshiftError as exc:
        audit_trail.record_failure(
            rt, "vault.delete", exc, target_type="vault", target_id=rec.name, tenant_id=rec.tenant_id
        )
        raise
    rt.forget_vault(rec.name)
    rt.forget_vault(rec.id)
    view["keys_erased"] = erased
    return view


def purge_due_keys(rt: Runtime) -> list[str]:
    """Purge every soft-deleted local key whose retention has ended (for `maintenance run`).

    Returns the purged keys as "vault/key". Each purge is its own audited transaction.
    """
    from keyshift.vaults.local import LocalVault

    with rt.transaction() as session:
        names = session.scalars(
            select(VaultRecord.name).where(VaultRecord.kind == "local", VaultRecord.state != "deleted")
        ).all()
    purged: list[str] = []
    for name in names:
        adapter = rt.vault(name)
        if isinstance(adapter, LocalVault):
            purged += [f"{name}/{key}" for key in adapter.purge_due()]
    return purged
