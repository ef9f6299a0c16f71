"""The control plane's answer to a refused data key: confirm on a fresh connection, then let the
monitor decide. `wire(rt)` installs it into the runtime's data plane (`stores.keys`); every
interface that opens a runtime (CLI, API server, worker, SDK) calls it.

What a data-plane failure leads to, by the vault error's outcome (vaults/base.py):

- ``local`` (this process lacks the PIN, credentials, module or config): nothing changes; the
  request fails with the vault error (exit 6, HTTP 503) that names the cause and the fix.
- ``unreachable``: nothing changes here; only the health monitor counts an outage toward the
  grace period.
- ``refused``: the failed operation is repeated on a FRESH connection as the same identity. If the
  vault refuses again, the monitor's check of the environment's policy runs now (it disables every
  environment of the policy when the policy's key is confirmed unusable). If the policy's key still
  works but this data key's own version is refused (an old version disabled while DEKs are still
  wrapped under it), this environment alone is disabled — with that evidence. If the fresh
  connection succeeds, the old one was stale: the runtime's adapter is replaced, nothing changes.

Checks are rate-limited per environment (`RECHECK_SECONDS`), so a burst of refused requests is not
a burst of vault round trips.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from sqlalchemy import select

from keyshift.db.models import Environment
from keyshift.errors import EnvironmentUnavailableError, KeyshiftError
from keyshift.runtime import Runtime
from keyshift.stores.keys import KeyFailure, data_keys
from keyshift.vaults.base import LOCAL, REFUSED, KeyRef, WrappedKey, outcome_of
from keyshift.vaults.registry import open_fresh

log = logging.getLogger("keyshift.revocation")

RECHECK_SECONDS = 0.5
_WIRED = "keyshift.control.key_events.wired"

_recheck_lock = threading.Lock()
_last_recheck: dict[tuple[int, str], float] = {}


def wire(rt: Runtime) -> Runtime:
    """Install the confirmed-check handler into this runtime's data plane (idempotent)."""
    marker: dict[str, bool] = rt.extension(_WIRED, lambda _rt: {})
    if not marker.get("done"):
        data_keys(rt).on_key_failure.append(on_key_failure)
        marker["done"] = True
    return rt


def on_key_failure(failure: KeyFailure) -> KeyshiftError | None:
    """Handler for `stores.keys`: the error the request fails with instead, or None (keep the
    vault's). Never raises: the request fails closed with the vault error either way."""
    outcome = outcome_of(failure.error)
    if outcome == LOCAL:
        # The request's own error names the cause and the fix; `serve` and `worker` warned at start.
        log.info(
            "this process cannot use the key vault of environment %s (nothing changed): %s",
            failure.env_id,
            failure.error.message,
        )
        return None
    if outcome != REFUSED:
        return None
    try:
        return _confirm(failure)
    except Exception:
        log.exception("confirming a refused data key of environment %s failed", failure.env_id)
        return None


def _throttled(rt: Runtime, env_id: str) -> bool:
    key = (id(rt.engine), env_id)
    now = time.monotonic()
    with _recheck_lock:
        if now - _last_recheck.get(key, -RECHECK_SECONDS) < RECHECK_SECONDS:
            return True
        _last_recheck[key] = now
        return False


def _confirm(failure: KeyFailure) -> KeyshiftError | None:
    rt = failure.rt
    with rt.transaction() as s:
        env = s.get(Environment, failure.env_id)
        if env is None:
            return None
        name, policy_id, tenant_id = env.name, env.policy_id, env.tenant_id
    if _throttled(rt, failure.env_id):
        return _state_error(rt, failure.env_id, name)
    vault_id = failure.wrap.vault_id if failure.wrap is not None else failure.target.vault_id  # type: ignore[union-attr]
    evidence = _retry_fresh(rt, failure, vault_id, tenant_id)
    if evidence is None:  # the fresh connection works: the runtime's adapter was stale
        rt.forget_vault(vault_id)
        return None
    if evidence.get("outcome") != REFUSED:
        return None  # not confirmed (unreachable or local on the fresh connection)
    log.warning(
        "the vault refused a data key of environment %s (%s) again on a fresh connection: %s",
        name,
        failure.env_id,
        evidence["answer"],
    )
    from keyshift.control.monitor import check_one

    if policy_id is not None:
        try:
            check_one(rt, policy_id, source="data_plane")
        except KeyshiftError as err:  # the policy check itself could not run from here
            log.error("policy %s could not be checked after a refused data key: %s", policy_id, err.message)
    if _state(rt, failure.env_id) == "enabled":
        from keyshift.control.revocation import disable_environment

        reason = f"the vault refused the environment's data key ({failure.error.code})"
        disable_environment(rt, failure.env_id, reason, source="data_plane", evidence=evidence)
    return _state_error(rt, failure.env_id, name)


def _retry_fresh(rt: Runtime, failure: KeyFailure, vault_id: str, tenant_id: str) -> dict[str, Any] | None:
    """Repeat the refused operation on a fresh adapter. None if it works now; else the evidence."""
    vault: Any = None
    context = {"tenant": tenant_id, "environment": failure.env_id, "store": failure.store}
    try:
        vault = open_fresh(rt, vault_id)
        if failure.wrap is not None:
            w = failure.wrap
            ref = KeyRef(vault.name, w.key_name, w.key_version)
            identity = w.identity or ""
            check = f"unwrap of data key {w.dek_id} ({failure.store}) as {identity} on a fresh connection"
            wk = WrappedKey(key=ref, algorithm=w.algorithm, ciphertext=w.wrapped, meta=dict(w.meta or {}))
            vault.unwrap(wk, identity=identity, context=context)
        else:
            t = failure.target
            assert t is not None
            ref = KeyRef(vault.name, t.key_name, t.key_version)
            identity = t.identity
            check = f"wrap of a new data key ({failure.store}) as {identity} on a fresh connection"
            vault.wrap(ref, secrets.token_bytes(32), identity=identity, context=context)
    except KeyshiftError as err:
        return {
            "vault": {"id": vault_id, "name": getattr(vault, "name", None)},
            "kind": getattr(vault, "kind", None),
            "key": ref.name if vault is not None else None,
            "version": ref.version if vault is not None else None,
            "identity": identity if vault is not None else None,
            "check": check if vault is not None else "open a fresh connection",
            "answer": f"{err.code}: {err.message}",
            "outcome": outcome_of(err),
            "confirmed": "refused again on a fresh connection",
        }
    finally:
        closer = getattr(vault, "close", None)
        if callable(closer):
            closer()
    return None


def _state(rt: Runtime, env_id: str) -> str | None:
    with rt.transaction() as s:
        return s.scalar(select(Environment.state).where(Environment.id == env_id))


def _state_error(rt: Runtime, env_id: str, name: str) -> KeyshiftError | None:
    """The SPEC error for an environment that is no longer enabled (exit 7), else None."""
    state = _state(rt, env_id)
    if state == "locked":
        return EnvironmentUnavailableError(
            f"environment {name!r} is locked; reads and writes are refused", code="environment_locked"
        )
    if state == "disabled":
        return EnvironmentUnavailableError(
            f"environment {name!r} is disabled: its encryption key is inaccessible; reads and writes "
            "are refused",
            code="environment_disabled",
        )
    return None
