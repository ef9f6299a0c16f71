"""Revocation: when an environment's key becomes unusable, the environment is disabled — fail closed.

Two paths lead here, and both must hold on their own:

(a) the health monitor (`control.monitor`) finds a policy `unhealthy` (grant removed, key or version
    disabled, key deleted, key expired, vault unreachable past `settings.vault_grace_seconds`) and
    calls `disable_policy_environments`;
(b) the data plane's own unwrap/wrap is refused by the vault (not a transient outage):
    `stores.keys` calls `on_data_key_failure`, which confirms with a real policy check and disables
    the environment (and, when the policy itself is unhealthy, every environment of the policy).

Disabling sets `state=disabled`, `state_reason`, `state_changed_at`, schedules the deletion
(`control.deletion`) and records an admin audit row per environment, all in one transaction; then
this process's cached DEKs of those environments are flushed. Other processes see the state within
`settings.state_refresh_seconds` (stores.envstate) and flush theirs; a DEK they cached before is in
any case never older than the revocation bound (the DEK cache's max age is capped by it).

Recovery: `reenable_environment` (`env re-enable ENV`, admin) proves the key with a real wrap/unwrap
round trip as the environment's identity (the policy identity for CMK) and unwraps every current DEK
wrap of the environment before it sets the environment `enabled` again and cancels its deletion.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import select

from keyshift.control import audit_trail
from keyshift.control.common import get_environment, refuse
from keyshift.db.models import Dek, DekWrap, Environment, Policy
from keyshift.errors import (
    ConflictError,
    EnvironmentUnavailableError,
    KeyInaccessibleError,
    KeyshiftError,
)
from keyshift.runtime import Runtime
from keyshift.vaults.base import KeyRef, WrappedKey, with_retries

log = logging.getLogger("keyshift.revocation")

REASON_PREFIX = "key revoked"
# The data-plane hook checks a policy at most this often per process (a burst of refused requests
# must not turn into a burst of vault round trips).
RECHECK_SECONDS = 0.5

_recheck_lock = threading.Lock()
_last_recheck: dict[tuple[int, str], float] = {}


def revoked_reason(reason: str) -> str:
    return f"{REASON_PREFIX}: {reason}"


# -- disabling ------------------------------------------------------------------------------------


def _disable_rows(
    rt: Runtime, s: Any, envs: list[Environment], reason: str, source: str, details: dict[str, Any]
) -> list[str]:
    from keyshift.control.deletion import schedule_deletion

    now = rt.clock.now()
    done: list[str] = []
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
            details={"source": source, "policy": env.policy_id, **details},
        )
        schedule_deletion(rt, s, env, now, why="disabled by a revoked key")
        done.append(env.id)
    return done


def _after_disable(rt: Runtime, env_ids: list[str]) -> None:
    """Flush this process's unwrapped DEKs and state snapshots of the disabled environments."""
    from keyshift.stores.envstate import env_states
    from keyshift.stores.keys import flush

    for env_id in env_ids:
        flush(rt, env_id)
        env_states(rt).invalidate(env_id)
    if env_ids:
        log.warning("disabled %d environment(s) after key revocation", len(env_ids))


def disable_policy_environments(
    rt: Runtime, policy_id: str, reason: str, *, source: str = "monitor"
) -> list[str]:
    """Disable every enabled environment linked to the policy. Returns the ids disabled now."""
    with rt.transaction() as s:
        envs = list(
            s.scalars(
                select(Environment)
                .where(Environment.policy_id == policy_id, Environment.state == "enabled")
                .order_by(Environment.id)
                .with_for_update()
            )
        )
        done = _disable_rows(rt, s, envs, reason, source, {"policy": policy_id})
    _after_disable(rt, done)
    return done


def disable_environment(rt: Runtime, env_id: str, reason: str, *, source: str) -> bool:
    """Disable one environment (its key was refused). True if it was enabled and is disabled now."""
    with rt.transaction() as s:
        env = s.scalars(select(Environment).where(Environment.id == env_id).with_for_update()).first()
        done = _disable_rows(rt, s, [env] if env else [], reason, source, {})
    _after_disable(rt, done)
    return bool(done)


# -- path (b): the data plane's key was refused ---------------------------------------------------


def on_data_key_failure(rt: Runtime, env_id: str, error: KeyshiftError) -> KeyshiftError | None:
    """Hook for `stores.keys`: the vault refused a DEK wrap/unwrap of `env_id`.

    A transient outage (retryable error) changes nothing here: within the grace period environments
    stay up, and the monitor decides when the grace is over. A refusal (disabled, deleted, expired,
    access denied, not found) is confirmed with a real policy check; the environment — and every
    environment of the policy when the policy is unhealthy — is disabled, and the caller gets the
    documented error (exit 7) instead of the vault's. Never raises: a failure here leaves `error`
    to be raised.
    """
    if error.retryable or not isinstance(error, KeyInaccessibleError):
        return None
    try:
        return _confirm_and_disable(rt, env_id, error)
    except Exception:  # the caller's request fails closed with the vault error either way
        log.exception("revocation check after a refused data key failed")
        return None


def _confirm_and_disable(rt: Runtime, env_id: str, error: KeyshiftError) -> KeyshiftError | None:
    with rt.transaction() as s:
        env = s.get(Environment, env_id)
        if env is None:
            return None
        name, policy_id = env.name, env.policy_id
    key = (id(rt.engine), env_id)
    with _recheck_lock:
        throttled = time.monotonic() - _last_recheck.get(key, -RECHECK_SECONDS) < RECHECK_SECONDS
        if not throttled:
            _last_recheck[key] = time.monotonic()
    reason = f"the vault refused the environment's data key ({error.code})"
    report = None
    if policy_id is not None and not throttled:
        from keyshift.control.health import check_policy

        report = check_policy(rt, policy_id)
    if report is not None and report.status == "unhealthy":
        assert policy_id is not None
        disable_policy_environments(rt, policy_id, "; ".join(report.reasons) or reason, source="data_plane")
    # The environment itself is disabled either way (no vault call needed): its key was refused.
    disable_environment(rt, env_id, reason, source="data_plane")
    with rt.transaction() as s:
        state = s.scalar(select(Environment.state).where(Environment.id == env_id))
    if state == "locked":  # a BYOK tenant lock got there first
        return EnvironmentUnavailableError(
            f"environment {name!r} is locked; reads and writes are refused", code="environment_locked"
        )
    return EnvironmentUnavailableError(
        f"environment {name!r} is disabled: its encryption key is inaccessible ({error.code}); "
        "reads and writes are refused",
        code="environment_disabled",
    )


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
    return {"key": f"{vault.name}/{key_name}", "identity": identity, "deks_checked": len(wraps)}


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
    return {"environment": env_id, "name": name, "state": "enabled", **proof}


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
    return value.isoformat() if value is not None else None


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
