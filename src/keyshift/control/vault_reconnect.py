"""`vault reconnect`: point an external vault at new connection settings, once they are proven.

The way out when a vault's endpoint moves or its client credentials change (a KMIP client
certificate that expires, a new AWS endpoint or region, another PKCS#11 module path or PIN
reference): the settings given are merged over the vault's, validated as `vault add` validates
them, and *proven* before anything changes — through an adapter opened on the new settings, one
data key wrap per key version in use on the vault is unwrapped (an unwrap that succeeds is
authoritative: under another key it fails), and a key that policies name but no wrap uses yet is
described. Any failure refuses the change with the vault left exactly as it was. On success the
record's settings version is bumped, so every process opens its adapter anew on the new settings
within `runtime.VAULT_SETTINGS_RECHECK_SECONDS`. Audited as `vault.reconnect` with the names of
the settings changed and what was proven (never a secret: secrets are references).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from keyshift.control import audit_trail
from keyshift.control.vault_registry import customer_vault
from keyshift.control.vaults import tenant_names, vault_view
from keyshift.db.engine import read_transaction
from keyshift.db.models import Dek, DekWrap, Environment, Policy, VaultRecord
from keyshift.errors import ConflictError, KeyshiftError, UsageError
from keyshift.runtime import Runtime
from keyshift.vaults.base import KeyRef, WrappedKey
from keyshift.vaults.external import validate_config
from keyshift.vaults.registry import adapter_for

LIVE_WRAPS = ("current", "pending", "retained")


def reconnect_vault(rt: Runtime, vault: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Change an external vault's connection settings after proving them (module docstring).
    Returns the vault's view with `changed` (setting names) and `proven` (what was checked)."""
    target = vault
    try:
        rec = customer_vault(rt, vault)
        target = rec.name
        if rec.kind == "local":
            raise ConflictError(
                f"vault {rec.name!r} is a local vault: it has no connection settings", code="not_external"
            )
        if not settings:
            raise UsageError("nothing to change: give the connection settings to change")
        current = dict(rec.config or {})
        merged = validate_config(rec.kind, {**current, **settings})
        changed = sorted(k for k in set(merged) | set(current) if merged.get(k) != current.get(k))
        if not changed:
            raise UsageError(f"vault {rec.name!r} already has these settings: nothing to change")
        proven = _prove(rt, rec, merged)
        with rt.transaction() as session:
            row = session.get(VaultRecord, rec.id, with_for_update=True)
            if row is None or row.state != "active":
                raise ConflictError(f"vault {rec.name!r} is not active", code="vault_not_active")
            if row.version != rec.version or dict(row.config or {}) != current:
                raise ConflictError(
                    f"vault {rec.name!r} was changed meanwhile; run the command again",
                    code="vault_changed",
                )
            row.config = merged
            row.version = row.version + 1
            session.flush()
            audit_trail.record(
                rt,
                session,
                "vault.reconnect",
                target_type="vault",
                target_id=row.name,
                tenant_id=row.tenant_id,
                details={"id": row.id, "changed": changed, "proven": proven},
            )
            view = vault_view(row, tenant_names(session, [row.tenant_id]).get(row.tenant_id or ""))
    except KeyshiftError as exc:
        err = exc
    else:
        rt.forget_vault(rec.name)
        rt.forget_vault(rec.id)
        return {**view, "changed": changed, "proven": proven}
    audit_trail.record_failure(rt, "vault.reconnect", err, target_type="vault", target_id=str(target)[:200])
    raise err


def _prove(rt: Runtime, rec: VaultRecord, config: dict[str, Any]) -> list[str]:
    """Unwrap one live wrap per key version on the vault, and describe each key policies name
    that no wrap proved, through an adapter on `config`. Returns what was proven."""
    with read_transaction(rt.sessions) as s:
        firsts = (
            select(func.min(DekWrap.id))
            .where(DekWrap.vault_id == rec.id, DekWrap.state.in_(LIVE_WRAPS))
            .group_by(DekWrap.key_name, DekWrap.key_version)
        )
        wraps = s.execute(
            select(DekWrap, Dek.store, Dek.environment_id, Environment.tenant_id)
            .join(Dek, Dek.id == DekWrap.dek_id)
            .join(Environment, Environment.id == Dek.environment_id, isouter=True)
            .where(DekWrap.id.in_(firsts))
            .order_by(DekWrap.key_name, DekWrap.key_version)
        ).all()
        for w, *_ in wraps:
            s.expunge(w)
        named = set(
            s.scalars(select(Policy.key_name).where(Policy.vault_id == rec.id, Policy.state != "deleted"))
        )
    candidate = VaultRecord(  # transient, never added to a session: the adapter's settings only
        id=rec.id,
        name=rec.name,
        kind=rec.kind,
        owner=rec.owner,
        tenant_id=rec.tenant_id,
        config=config,
        soft_delete_days=rec.soft_delete_days,
        purge_protection=rec.purge_protection,
        state=rec.state,
        version=rec.version,
    )
    adapter = adapter_for(rt, candidate)
    proven: list[str] = []
    try:
        for w, store, env_id, tenant_id in wraps:
            wrapped = WrappedKey(
                key=KeyRef(rec.name, w.key_name, w.key_version),
                algorithm=w.algorithm,
                ciphertext=w.wrapped,
                meta=dict(w.meta or {}),
            )
            context = {"tenant": tenant_id or "", "environment": env_id or "", "store": store}
            label = f"{w.key_name} version {w.key_version}"
            try:
                adapter.unwrap(wrapped, identity=w.identity or "", context=context)
            except KeyshiftError as exc:
                raise _unproven(rec, label, "unwrap of a data key", exc) from None
            proven.append(f"unwrap {label}")
        for key in sorted(named - {w.key_name for w, *_ in wraps}):
            try:
                adapter.describe(KeyRef(rec.name, key))
            except KeyshiftError as exc:
                raise _unproven(rec, key, "describe", exc) from None
            proven.append(f"describe {key}")
    finally:
        close = getattr(adapter, "close", None)
        if callable(close):
            close()
    return proven


def _unproven(rec: VaultRecord, what: str, check: str, exc: KeyshiftError) -> ConflictError:
    return ConflictError(
        f"the new settings of vault {rec.name!r} were not proven: {check} of key {what} failed "
        f"({exc.code}); nothing was changed",
        code="settings_unproven",
    )
