"""Revocation: when an environment's key is confirmed unusable, the environment is disabled — fail
closed, for the right reasons.

Environment state changes only through the health monitor (`control.monitor.check_one`) or an admin
action. Two things trigger the monitor's check:

(a) its own schedule (`monitor_due` in the worker, `policy monitor`, `run_periodic`);
(b) a data-plane process whose DEK wrap/unwrap the vault *refused*: `stores.keys` reports the
    failure as an event, and `control.key_events` (wired into every runtime an interface opens)
    repeats the failed operation on a fresh connection and runs the monitor's check at once.

Only a refusal by the key's owner (key disabled, deleted, expired, grant removed), confirmed on a
fresh connection, or a vault unreachable past the grace period on every monitor check, disables.
A failure local to one process (missing PIN, wrong credentials, no module or config) never does:
that process's request fails (exit 6) naming the cause and the fix, and every other process keeps
serving.

Disabling sets `state=disabled`, `state_reason`, `state_changed_at`, schedules the deletion
(`control.deletion`) and records an admin audit row per environment with the evidence (which vault,
which check, what it answered), all in one transaction; then this process's cached DEKs of those
environments are flushed and each change is logged (environment, policy, reason). Other processes
see the state within `settings.state_refresh_seconds` (stores.envstate) and flush theirs; a DEK
they cached before is never older than the revocation bound (the DEK cache's max age is capped).

Recovery: `reenable_environment` (`env re-enable ENV`, admin) proves the key with a real wrap/unwrap
round trip as the environment's identity (the policy identity for CMK) and unwraps every current DEK
wrap of the environment before it sets the environment `enabled` again and cancels its deletion.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.control.common import get_environment, refuse
from keyshift.control.evidence import vault_and_key
from keyshift.db.models import AdminAuditEvent, Dek, DekWrap, Environment, Policy
from keyshift.errors import (
    ConflictError,
    KeyInaccessibleError,
    KeyshiftError,
)
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z
from keyshift.vaults.base import KeyRef, WrappedKey, with_retries

log = logging.getLogger("keyshift.revocation")

REASON_PREFIX = "key revoked"


def revoked_reason(reason: str) -> str:
    return f"{REASON_PREFIX}: {reason}"


# -- disabling ------------------------------------------------------------------------------------


def _disable_rows(
    rt: Runtime,
    s: Any,
    envs: list[Environment],
    reason: str,
    source: str,
    details: dict[str, Any],
    evidence: dict[str, Any] | None,
) -> list[tuple[str, str, str | None, str]]:
    from keyshift.control.deletion import schedule_deletion

    now = rt.clock.now()
    done: list[tuple[str, str, str | None, str]] = []
    for env in envs:
        if env.state != "enabled":
            continue
        env.state = "disabled"
        env.state_reason = revoked_reason(reason)
        env.state_changed_at = now
        audit_trail.record(
            rt,
            s,
            "environment.disable",
            target_type="environment",
            target_id=env.id,
            tenant_id=env.tenant_id,
            reason=env.state_reason,
            details={"source": source, "policy": env.policy_id, **details, "evidence": evidence},
        )
        schedule_deletion(rt, s, env, now, why="disabled by a revoked key")
        done.append((env.id, env.name, env.policy_id, env.state_reason))
    return done


def _after_disable(rt: Runtime, done: list[tuple[str, str, str | None, str]], source: str) -> list[str]:
    """Flush this process's unwrapped DEKs and state snapshots of the disabled environments; log
    each state change with environment, policy and reason."""
    from keyshift.stores.envstate import env_states
    from keyshift.stores.keys import flush

    for env_id, name, policy_id, reason in done:
        flush(rt, env_id)
        env_states(rt).invalidate(env_id)
        log.warning(
            "environment %s (%s) disabled by %s: policy %s; %s", name, env_id, source, policy_id, reason
        )
    return [d[0] for d in done]


def disable_policy_environments(
    rt: Runtime,
    policy_id: str,
    reason: str,
    *,
    source: str = "monitor",
    evidence: dict[str, Any] | None = None,
) -> list[str]:
    """Disable every enabled environment linked to the policy (its key is confirmed unusable).
    Returns the ids disabled now."""
    with rt.transaction() as s:
        envs = list(
            s.scalars(
                select(Environment)
                .where(Environment.policy_id == policy_id, Environment.state == "enabled")
                .order_by(Environment.id)
                .with_for_update()
            )
        )
        done = _disable_rows(rt, s, envs, reason, source, {"policy": policy_id}, evidence)
    return _after_disable(rt, done, source)


def disable_environment(
    rt: Runtime, env_id: str, reason: str, *, source: str, evidence: dict[str, Any] | None = None
) -> bool:
    """Disable one environment (its key was refused, confirmed). True if it was enabled and is
    disabled now."""
    with rt.transaction() as s:
        env = s.scalars(select(Environment).where(Environment.id == env_id).with_for_update()).first()
        done = _disable_rows(rt, s, [env] if env else [], reason, source, {}, evidence)
    return bool(_after_disable(rt, done, source))


def state_evidence(s: Session, env: Environment) -> dict[str, Any] | None:
    """Why a disabled environment is disabled: the evidence of its latest `environment.disable`
    audit row (source, vault, check, answer, time). None for an environment that is not disabled."""
    if env.state != "disabled":
        return None
    row = s.scalars(
        select(AdminAuditEvent)
        .where(AdminAuditEvent.action == "environment.disable", AdminAuditEvent.target_id == env.id)
        .order_by(AdminAuditEvent.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    details = dict(row.details or {})
    evidence = details.get("evidence") or {}
    vault, key, version = vault_and_key(s, evidence)
    return {
        "source": details.get("source"),
        "at": iso_z(row.at),
        "vault": vault,
        "key": key,
        "version": version,
        "check": evidence.get("check"),
        "answer": evidence.get("answer"),
        "outcome": evidence.get("outcome"),
        "confirmed": evidence.get("confirmed"),
    }


# -- recovery -------------------------------------------------------------------------------------


def _prove_key(rt: Runtime, env_id: str) -> dict[str, Any]:
    """Real round trip under the binding's key as its identity + unwrap every current DEK wrap."""
    with rt.transaction() as s:
        env = s.get(Environment, env_id)
        assert env is not None
        if not env.kek_vault_id or not env.kek_key_name or not env.kek_identity:
            raise ConflictError(f"environment {env.name!r} has no key binding", code="no_key_binding")
        vault_id, key_name, identity = env.kek_vault_id, env.kek_key_name, env.kek_identity
        tenant_id = env.tenant_id
        wraps = s.execute(
            select(Dek.store, DekWrap)
            .join(DekWrap, DekWrap.dek_id == Dek.id)
            .where(Dek.environment_id == env_id, Dek.state != "destroyed", DekWrap.state == "current")
        ).all()
        for _, w in wraps:
            s.expunge(w)
    vault = rt.vault(vault_id)
    probe = secrets.token_bytes(32)
    ctx = {"purpose": "re-enable", "environment": env_id}
    ref = KeyRef(vault.name, key_name)
    wrapped = with_retries(lambda: vault.wrap(ref, probe, identity=identity, context=ctx))
    back = with_retries(lambda: vault.unwrap(wrapped, identity=identity, context=ctx))
    if not secrets.compare_digest(back, probe):
        raise KeyInaccessibleError("the key failed its wrap/unwrap round trip", code="key_check_failed")
    for store, w in wraps:
        wvault = rt.vault(w.vault_id)
        wk = WrappedKey(
            key=KeyRef(wvault.name, w.key_name, w.key_version),
            algorithm=w.algorithm,
            ciphertext=w.wrapped,
            meta=dict(w.meta or {}),
        )
        dctx = {"tenant": tenant_id, "environment": env_id, "store": store}
        wid = w.identity or identity

        def _unwrap(
            v: Any = wvault, wk: WrappedKey = wk, wid: str = wid, dctx: dict[str, str] = dctx
        ) -> bytes:
            return v.unwrap(wk, identity=wid, context=dctx)  # type: ignore[no-any-return]

        with_retries(_unwrap)
    return {
        "key": f"{vault.name}/{key_name}",
        "identity": identity,
        "deks_checked": len(wraps),
        "evidence": {
            "vault": {"id": vault_id, "name": vault.name},
            "kind": getattr(vault, "kind", None),
            "key": key_name,
            "version": None,
            "identity": identity,
            "check": f"wrap/unwrap round trip, then unwrap of {len(wraps)} current data key wrap(s)",
            "answer": "ok",
        },
    }


def reenable_environment(rt: Runtime, env_ref: str) -> dict[str, Any]:
    """`env re-enable ENV`: after access is restored, prove the key, then enable the environment."""
    action = "environment.re_enable"
    fields: dict[str, Any] = {"target_type": "environment", "target_id": env_ref}
    try:
        with rt.transaction() as s:
            env = get_environment(s, env_ref)
            fields.update(target_id=env.id, tenant_id=env.tenant_id)
            if env.state != "disabled":
                raise ConflictError(
                    f"environment {env.name!r} is {env.state}, not disabled", code="not_disabled"
                )
            env_id, policy_id, version = env.id, env.policy_id, env.version
        if policy_id is not None:
            from keyshift.control.health import check_policy

            report = check_policy(rt, policy_id, audit=True)
            if report.status in ("unhealthy", "undetermined"):
                raise KeyInaccessibleError(
                    f"the policy's key is still not usable: {'; '.join(report.reasons)}",
                    code="key_inaccessible",
                )
        proof = _prove_key(rt, env_id)
    except KeyshiftError as err:
        raise refuse(rt, action, err, **fields) from None
    changed: KeyshiftError | None = None
    name = ""
    with rt.transaction() as s:
        env = s.scalars(select(Environment).where(Environment.id == env_id).with_for_update()).one()
        if env.state != "disabled" or env.version != version:
            changed = ConflictError(
                f"environment {env.name!r} changed while its key was checked; run it again",
                code="concurrent_update",
            )
        else:
            name = _enable(rt, s, env, action, proof)
    if changed is not None:  # recorded outside the transaction that held the row lock
        raise refuse(rt, action, changed, **fields)
    from keyshift.stores.envstate import env_states

    env_states(rt).invalidate(env_id)
    return {"environment": {"id": env_id, "name": name}, "state": "enabled", **proof}


def _enable(rt: Runtime, s: Any, env: Environment, action: str, proof: dict[str, Any]) -> str:
    previous = {"state_reason": env.state_reason, "delete_after": _iso(env.delete_after)}
    now = rt.clock.now()
    env.state, env.state_reason, env.state_changed_at = "enabled", None, now
    env.delete_after = None
    audit_trail.record(
        rt,
        s,
        action,
        target_type="environment",
        target_id=env.id,
        tenant_id=env.tenant_id,
        reason="key access restored and verified by a wrap/unwrap round trip",
        details={
            **proof,
            "policy": env.policy_id,
            "previous": previous,
            "deletion_cancelled": previous["delete_after"] is not None,
        },
    )
    return env.name


def _iso(value: datetime | None) -> str | None:
    return iso_z(value) if value is not None else None


def linked_policies(rt: Runtime) -> list[str]:
    """Policies with at least one environment that is not deleted."""
    with rt.transaction() as s:
        return list(
            s.scalars(
                select(Policy.id)
                .join(Environment, Environment.policy_id == Policy.id)
                .where(Environment.state != "deleted", Policy.state != "deleted")
                .distinct()
                .order_by(Policy.id)
            )
        )
