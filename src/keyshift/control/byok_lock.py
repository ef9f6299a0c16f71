"""Legacy BYOK tenant lock and unlock (docs/CONCEPTS.md).

Lock (`byok lock T --file F.pfx --password P --confirm T`): the caller proves possession of the
tenant's *active* key (the PKCS#12 file opens with the password and its public-key fingerprint is
that of an active BYOK key of the tenant) and types the tenant's name. Refused within 72 hours of
the tenant's last key change (Tenant.last_key_change_at). Effects, in one transaction: every BYOK
environment of the tenant turns `locked` (reads and writes refused with EnvironmentUnavailableError
code environment_locked, exit 7) and is scheduled for deletion in 28 days; the tenant's BYOK keys
turn `deleted`; the tenant records `locked_at`. Then the keys are deleted from the BYOK vault (soft
delete: the vault's purge protection keeps them recoverable for its retention period). This
process's cached DEKs are flushed; other processes see `locked` within state_refresh_seconds.

Unlock (`byok unlock T [ENV]`): after the SAME key (same public-key fingerprint as the key the
environment was encrypted with) was imported again under a new name (`byok key import`) and
activated (`byok key activate`), each environment (or the named one) is unlocked: every current DEK
wrap is unwrapped with the re-imported key (RSA-OAEP wraps do not depend on the key's name), the
wraps and the binding are pointed at the re-imported key, the environment turns `enabled` and its
deletion is cancelled. When no environment is left locked — unlocked, or deleted (the 28-day
deletion, `env delete`) — the tenant's lock ends (`keyshift.control.byok_lifecycle`); a tenant still
marked locked with no locked environment (a state older versions could leave) is released by
`byok unlock T` or the next maintenance run.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from keyshift.clock import utc
from keyshift.control import audit_trail
from keyshift.control.byok_lifecycle import end_lock_if_clear, locked_count
from keyshift.control.common import get_environment, get_tenant, operation, refuse
from keyshift.control.deletion import schedule_deletion
from keyshift.control.pkcs12_files import (
    check_password,
    check_size,
    fingerprint,
    load_rsa_key,
    read_file,
)
from keyshift.db.models import ByokKey, Dek, DekWrap, Environment, Tenant
from keyshift.errors import ConflictError, KeyshiftError, UsageError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z
from keyshift.vaults.base import KeyRef, WrappedKey, with_retries

KEY_CHANGE_QUIET = timedelta(hours=72)
LOCK_REASON = "tenant locked"


def lock(
    rt: Runtime, tenant_ref: str, *, file: str | Path, password: str, confirm: str | None
) -> dict[str, Any]:
    path = Path(file)
    return _lock(rt, tenant_ref, lambda: read_file(path), password, confirm, path.name)


def lock_pkcs12(
    rt: Runtime,
    tenant_ref: str,
    *,
    data: bytes,
    password: str,
    confirm: str | None,
    source: str = "the uploaded file",
) -> dict[str, Any]:
    """`lock` with the active key's PKCS#12 content given as bytes (an upload), not a path."""
    return _lock(rt, tenant_ref, lambda: check_size(data, source), password, confirm, source)


def _lock(
    rt: Runtime,
    tenant_ref: str,
    content: Callable[[], bytes],
    password: str,
    confirm: str | None,
    source: str,
) -> dict[str, Any]:
    action = "byok.lock"
    fields: dict[str, Any] = {"target_type": "tenant", "target_id": tenant_ref}
    try:
        pw = check_password(password, new=False)
        fp = fingerprint(load_rsa_key(content(), pw, source))
        with rt.transaction() as s:
            tenant = get_tenant(s, tenant_ref)
            tenant_id = tenant.id
            fields.update(target_id=tenant_id, tenant_id=tenant_id)
            _check_can_lock(rt, s, tenant, fp, confirm)
    except KeyshiftError as err:
        raise refuse(rt, action, err, **fields) from None
    with operation(rt, action, target_type="tenant", target_id=tenant_id, tenant_id=tenant_id) as op:
        s = op.session
        tenant = get_tenant(s, tenant_id, lock=True)
        _check_can_lock(rt, s, tenant, fp, confirm)  # again, under the lock
        now = rt.clock.now()
        keys = list(
            s.scalars(select(ByokKey).where(ByokKey.tenant_id == tenant.id, ByokKey.state != "deleted"))
        )
        envs = list(
            s.scalars(
                select(Environment)
                .where(
                    Environment.tenant_id == tenant.id,
                    Environment.enc_mode == "byok",
                    Environment.state.in_(("enabled", "disabled")),
                )
                .order_by(Environment.name)
                .with_for_update()
            )
        )
        for env in envs:
            prior = env.state
            env.state, env.state_changed_at = "locked", now
            env.state_reason = f"{LOCK_REASON} by {rt.principal} (was {prior})"
            audit_trail.record(
                rt,
                s,
                "environment.lock",
                target_type="environment",
                target_id=env.id,
                tenant_id=tenant.id,
                reason=env.state_reason,
                details={"previous_state": prior},
            )
            schedule_deletion(rt, s, env, now, why="locked by a BYOK tenant lock", locked=True)
        for k in keys:
            k.state, k.state_changed_at = "deleted", now
        tenant.locked_at = now
        vault_id = tenant.byok_vault_id
        key_names = [k.vault_key_name for k in keys]
        env_ids = [e.id for e in envs]
        op.details.update(
            environments=[e.name for e in envs],
            keys_deleted=[k.name for k in keys],
            fingerprint=fp,
        )
        tenant_name = tenant.name
    _flush(rt, env_ids)
    failures = _delete_vault_keys(rt, tenant_id, vault_id, key_names)
    return {
        "tenant": tenant_name,
        "locked_at": iso_z(now),
        "environments_locked": env_ids,
        "keys_deleted": len(key_names) - len(failures),
        "key_deletion_failures": failures,
    }


def _check_can_lock(rt: Runtime, s: Any, tenant: Tenant, fp: str, confirm: str | None) -> None:
    if confirm != tenant.name:
        raise UsageError(
            f"type the tenant's name with --confirm to lock tenant {tenant.name!r}",
            code="confirmation_required" if confirm is None else "confirmation_mismatch",
        )
    if tenant.byok_vault_id is None:
        raise ConflictError(f"tenant {tenant.name!r} has no BYOK keys to lock", code="not_byok_tenant")
    if tenant.locked_at is not None:
        raise ConflictError(f"tenant {tenant.name!r} is already locked", code="already_locked")
    active = s.scalars(
        select(ByokKey.fingerprint).where(ByokKey.tenant_id == tenant.id, ByokKey.state == "active")
    ).all()
    if not active:
        raise ConflictError(f"tenant {tenant.name!r} has no active BYOK key", code="no_active_key")
    if not any(secrets.compare_digest(fp, a) for a in active):
        raise ConflictError(
            "the key file is not the tenant's active BYOK key (fingerprints differ)", code="not_active_key"
        )
    if tenant.last_key_change_at is not None:
        allowed = utc(tenant.last_key_change_at) + KEY_CHANGE_QUIET
        if rt.clock.now() < allowed:
            raise ConflictError(
                f"tenant {tenant.name!r} changed its key at {iso_z(utc(tenant.last_key_change_at))}; "
                f"a lock is allowed from {iso_z(allowed)} (72 hours after a key change)",
                code="key_changed_recently",
            )


def _delete_vault_keys(rt: Runtime, tenant_id: str, vault_id: str | None, names: list[str]) -> list[str]:
    failures: list[str] = []
    if vault_id is None:
        return failures
    vault = rt.vault(vault_id)
    for name in names:
        try:
            vault.delete_key(name)  # type: ignore[attr-defined]
        except KeyshiftError as err:
            if err.code in ("key_deleted",):
                continue
            failures.append(name)
            audit_trail.record_failure(
                rt, "byok.lock.key_delete", err, target_type="byok_key", target_id=name, tenant_id=tenant_id
            )
    return failures


def _flush(rt: Runtime, env_ids: list[str]) -> None:
    from keyshift.stores.envstate import env_states
    from keyshift.stores.keys import flush

    for env_id in env_ids:
        flush(rt, env_id)
        env_states(rt).invalidate(env_id)


# -- unlock ---------------------------------------------------------------------------------------


def unlock(rt: Runtime, tenant_ref: str, env_ref: str | None = None) -> dict[str, Any]:
    action = "byok.unlock"
    fields: dict[str, Any] = {"target_type": "tenant", "target_id": tenant_ref}
    try:
        with rt.transaction() as s:
            tenant = get_tenant(s, tenant_ref)
            tenant_id = tenant.id
            fields.update(target_id=tenant_id, tenant_id=tenant_id)
            if env_ref is not None:
                env = get_environment(s, env_ref)
                if env.tenant_id != tenant.id:
                    raise UsageError(
                        f"environment {env.name!r} is not in tenant {tenant.name!r}", code="wrong_tenant"
                    )
                if env.state != "locked":
                    raise ConflictError(
                        f"environment {env.name!r} is {env.state}, not locked", code="not_locked"
                    )
                env_ids = [env.id]
            else:
                env_ids = list(
                    s.scalars(
                        select(Environment.id)
                        .where(Environment.tenant_id == tenant.id, Environment.state == "locked")
                        .order_by(Environment.name)
                    )
                )
                if not env_ids and tenant.locked_at is None:
                    raise ConflictError(
                        f"tenant {tenant.name!r} is not locked and has no locked environments",
                        code="not_locked",
                    )
    except KeyshiftError as err:
        raise refuse(rt, action, err, **fields) from None
    unlocked: list[str] = []
    for env_id in env_ids:  # one by one: each is checked and enabled on its own
        unlocked.append(_unlock_env(rt, tenant_id, env_id))
    with operation(
        rt, "byok.unlock.tenant", target_type="tenant", target_id=tenant_id, tenant_id=tenant_id
    ) as op:
        t = get_tenant(op.session, tenant_id, lock=True)
        ended = end_lock_if_clear(rt, op.session, tenant_id, why="unlocked")
        left = locked_count(op.session, tenant_id)
        op.details.update(unlocked=unlocked, still_locked=left, lock_ended=ended)
        return {
            "tenant": t.name,
            "unlocked": unlocked,
            "still_locked": left,
            "tenant_locked": t.locked_at is not None,
        }


def _unlock_env(rt: Runtime, tenant_id: str, env_id: str) -> str:
    action = "environment.unlock"
    fields = {"target_type": "environment", "target_id": env_id, "tenant_id": tenant_id}
    try:
        with rt.transaction() as s:
            env = s.get(Environment, env_id)
            tenant = s.get(Tenant, tenant_id)
            assert env is not None and tenant is not None
            old = s.get(ByokKey, env.byok_key_id) if env.byok_key_id else None
            if old is None:
                raise ConflictError(f"environment {env.name!r} names no BYOK key", code="no_byok_key")
            new = s.scalars(
                select(ByokKey).where(
                    ByokKey.tenant_id == tenant_id,
                    ByokKey.state == "active",
                    ByokKey.fingerprint == old.fingerprint,
                )
            ).first()
            if new is None:
                raise ConflictError(
                    f"re-import and activate the same key (fingerprint {old.fingerprint[:16]}...) as "
                    f"the one environment {env.name!r} was locked with (`byok key import` + "
                    "`byok key activate`), then unlock",
                    code="key_not_reactivated",
                )
            wraps = list(
                s.scalars(
                    select(DekWrap)
                    .join(Dek, Dek.id == DekWrap.dek_id)
                    .where(Dek.environment_id == env_id, Dek.state != "destroyed", DekWrap.state == "current")
                )
            )
            for w in wraps:
                s.expunge(w)
            stores = {w.dek_id: w for w in wraps}
            dek_stores = {
                dek_id: store
                for dek_id, store in s.execute(
                    select(Dek.id, Dek.store).where(Dek.id.in_(list(stores) or [""]))
                )
            }
            vault_id, new_name, new_id, version = (
                tenant.byok_vault_id,
                new.vault_key_name,
                new.id,
                env.version,
            )
            fp = new.fingerprint
        vault = rt.vault(vault_id)  # type: ignore[arg-type]
        current = vault.describe(KeyRef(vault.name, new_name)).current_version
        ref = KeyRef(vault.name, new_name, current)
        for w in wraps:  # prove every DEK opens under the re-imported key before anything changes
            wk = WrappedKey(key=ref, algorithm=w.algorithm, ciphertext=w.wrapped, meta=dict(w.meta or {}))
            ctx = {"tenant": tenant_id, "environment": env_id, "store": dek_stores.get(w.dek_id, "")}
            identity = w.identity or rt.settings.platform_identity

            def _unwrap(wk: WrappedKey = wk, ctx: dict[str, str] = ctx, identity: str = identity) -> bytes:
                return vault.unwrap(wk, identity=identity, context=ctx)

            with_retries(_unwrap)
    except KeyshiftError as err:
        raise refuse(rt, action, err, **fields) from None
    with operation(rt, action, target_type="environment", target_id=env_id, tenant_id=tenant_id) as op:
        s = op.session
        env = s.scalars(select(Environment).where(Environment.id == env_id).with_for_update()).one()
        if env.state != "locked" or env.version != version:
            raise ConflictError(
                f"environment {env.name!r} changed during the unlock; run it again", code="concurrent_update"
            )
        s.execute(
            update(DekWrap)
            .where(DekWrap.id.in_([w.id for w in wraps] or [-1]))
            .values(key_name=new_name, key_version=current)
        )
        now = rt.clock.now()
        op.details.update(
            reason=f"unlocked: the same key (fingerprint {fp[:16]}...) was re-imported and activated, "
            "and every data key of the environment unwraps under it",
            key=new_name,
            deks=len(wraps),
            cancelled_delete_after=iso_z(utc(env.delete_after)) if env.delete_after else None,
        )
        env.kek_key_name, env.kek_key_version, env.byok_key_id = new_name, current, new_id
        env.state, env.state_reason, env.state_changed_at, env.delete_after = "enabled", None, now, None
    from keyshift.stores.envstate import env_states

    env_states(rt).invalidate(env_id)
    return env_id
