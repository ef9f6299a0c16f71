"""The health monitor: check every policy that has environments, record the result, act on it.

`monitor_once(rt)` runs `control.health.check_policy` for each policy with linked (not deleted)
environments — the operator's checks plus a real wrap/unwrap round trip as the policy identity —
adds the warnings that come *ahead* of trouble, stores healthy/warning/unhealthy with reasons and
the time, and when a policy's key is confirmed unusable disables its environments
(`control.revocation`), with the evidence (which vault, which check, what it answered):

- refused (key disabled, deleted, expired, grant removed): the refusal must repeat on a fresh
  connection (`confirm_unusable`); a policy unhealthy for configuration reasons only keeps serving;
- unreachable: only past `vault_grace_seconds` of failed checks, each of which keeps probing on
  fresh connections for `outage_window` seconds (a flapping vault resets the grace clock);
- local to this process (credentials, PIN, module, config): nothing changes; logged as an error.

Warnings ahead of trouble (policy health `warning`, reasons recorded):
- the key version in use expires within 30 days (check_policy);
- a key version is disabled while DEKs of the policy's environments still have current wraps under it;
- the vault's soft-delete retention is shorter than `MIN_SOFT_DELETE_DAYS` (30: an environment
  disabled by a deleted key is kept 30 days — the key must stay recoverable at least that long);
- the key is scheduled for deletion (a soft-deleted key is already unusable, so that one is
  `unhealthy` and revokes; the warning is for vaults that report a future deletion date).

Worker integration: `monitor_due(rt)` is registered as the maintenance task "health" in
`keyshift.jobs.schedule.TASKS`; the worker loop calls the due maintenance after every poll, and
`monitor_due` runs `monitor_once` when `settings.health_interval_seconds` have passed since this
process last ran it (a one-shot `maintenance run` always runs it). `run_periodic(rt, stop_event)`
is the same loop for a process that runs the monitor alone.

Bound: a revocation is seen by the monitor within health_interval_seconds (+ the grace period for
an unreachable vault) and by every serving process state_refresh_seconds later; keep
health_interval_seconds + state_refresh_seconds <= revocation_bound_seconds (defaults 30 + 1 <= 60).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from keyshift.clock import utc
from keyshift.control import audit_trail
from keyshift.control.health import HealthReport, check_policy
from keyshift.control.revocation import disable_policy_environments, linked_policies
from keyshift.db.models import Dek, DekWrap, Environment, Policy, VaultRecord
from keyshift.errors import KeyshiftError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z
from keyshift.vaults.base import LOCAL, REFUSED, KeyRef, KeyVault, outcome_of, with_retries
from keyshift.vaults.registry import open_fresh

log = logging.getLogger("keyshift.monitor")

MIN_SOFT_DELETE_DAYS = 30
OUTAGE_WINDOW_MAX = 5.0
DELETION_WARNING = timedelta(days=30)
_LAST_RUN = "keyshift.control.monitor.last_run"


def monitor_once(rt: Runtime) -> dict[str, Any]:
    """Check every linked policy now. Returns {policy_id: result of `check_one`} — or
    {"error": {...}, "outcome": ...} for a policy this process could not check (nothing changed)."""
    out: dict[str, Any] = {}
    for policy_id in linked_policies(rt):
        try:
            out[policy_id] = check_one(rt, policy_id)
        except KeyshiftError as err:  # local to this process, or the policy changed: next round
            outcome = outcome_of(err)
            if outcome == LOCAL:
                log.error(
                    "health monitor cannot check policy %s from this process (nothing changed): %s",
                    policy_id,
                    err.message,
                )
            out[policy_id] = {"error": err.to_dict()["error"], "outcome": outcome}
    return out


def outage_window(rt: Runtime) -> float:
    """How long a monitor check keeps probing an unreachable vault on fresh connections before it
    counts as failed: a vault that answers at least this often is flapping, not down."""
    return min(OUTAGE_WINDOW_MAX, max(rt.settings.vault_grace_seconds / 2, 0.2))


def check_one(
    rt: Runtime, policy_id: str, *, source: str = "monitor", vault: KeyVault | None = None
) -> dict[str, Any]:
    """Check one policy, store its health and act: disable its environments only when the key is
    confirmed unusable — refused again on a fresh connection, or unreachable past the grace
    period on every check. A failure local to this process raises (nothing changes).

    Result fields: `health`, `reasons`, `key_usable` (True: the key wrapped and unwrapped; False:
    confirmed unusable; None: not known, e.g. vault unreachable), `environments_disabled` (ids
    disabled by this check), `action` (what was done) and `evidence` (the vault's answer).
    """
    report = check_policy(rt, policy_id, vault=vault, outage_window=outage_window(rt))
    if report.status != "unhealthy" and report.vault_reachable:
        try:
            extra = _early_warnings(rt, policy_id)
        except KeyshiftError:  # the vault stopped answering since the check: next round
            extra = []
        if extra:
            _store_warnings(rt, policy_id, report, extra)
    result: dict[str, Any] = {
        "health": report.status,
        "reasons": list(report.reasons),
        "key_usable": True if report.vault_reachable else None,
        "environments_disabled": [],
        "action": "none",
        "evidence": report.evidence,
    }
    if report.status != "unhealthy":
        return result
    evidence: dict[str, Any] | None
    if not report.vault_reachable:
        evidence = {**(report.evidence or {}), "confirmed": "unreachable on every check for the grace period"}
    else:
        confirmed, evidence = confirm_unusable(rt, policy_id)
        if not confirmed:
            # The key still works on a fresh connection: unhealthy for a configuration reason
            # (e.g. purge protection turned off, key type), or the refusal was not confirmed.
            # Environments keep serving; linking new ones is refused until it is fixed.
            result["key_usable"] = evidence is None
            result["action"] = (
                "kept: the key works (configuration problem only)"
                if evidence is None
                else f"kept: refusal not confirmed ({evidence.get('outcome')})"
            )
            if evidence is not None:
                result["evidence"] = evidence
            return result
    result["key_usable"] = False
    result["evidence"] = evidence
    result["environments_disabled"] = disable_policy_environments(
        rt, policy_id, "; ".join(report.reasons), source=source, evidence=evidence
    )
    result["action"] = "disabled the policy's environments"
    return result


def confirm_unusable(rt: Runtime, policy_id: str) -> tuple[bool, dict[str, Any] | None]:
    """A real wrap/unwrap round trip as the policy identity, under the key version in use, on a
    FRESH connection. (True, evidence) when the vault refuses it; (False, None) when it works;
    (False, evidence) when the answer is not a refusal (unreachable, local): not confirmed."""
    with rt.transaction() as s:
        p = s.get(Policy, policy_id)
        if p is None:
            return False, None
        vault_id, key_name, version, identity = p.vault_id, p.key_name, p.key_version, p.identity
    probe = secrets.token_bytes(32)
    ctx = {"purpose": "revocation-probe", "policy": policy_id}
    check = "wrap/unwrap round trip as the policy identity on a fresh connection"
    vault: Any = None
    try:
        vault = open_fresh(rt, vault_id)
        ref = KeyRef(vault.name, key_name, version)
        wrapped = with_retries(lambda: vault.wrap(ref, probe, identity=identity, context=ctx))
        back = with_retries(lambda: vault.unwrap(wrapped, identity=identity, context=ctx))
    except KeyshiftError as err:
        name = getattr(vault, "name", vault_id)
        evidence = {
            "vault": {"id": vault_id, "name": name if vault is not None else None},
            "kind": getattr(vault, "kind", None),
            "key": key_name,
            "version": version,
            "identity": identity,
            "check": check,
            "answer": f"{err.code}: {err.message}",
            "outcome": outcome_of(err),
            "confirmed": "refused on a fresh connection",
        }
        return outcome_of(err) == REFUSED, evidence
    finally:
        closer = getattr(vault, "close", None)
        if callable(closer):
            closer()
    if not secrets.compare_digest(back, probe):
        return True, {"vault": vault.name, "check": check, "answer": "returned a different value"}
    return False, None


def _early_warnings(rt: Runtime, policy_id: str) -> list[str]:
    with rt.transaction() as s:
        p = s.get(Policy, policy_id)
        if p is None:
            return []
        vrec = s.get(VaultRecord, p.vault_id)
        versions = set(
            s.scalars(
                select(DekWrap.key_version)
                .join(Dek, Dek.id == DekWrap.dek_id)
                .join(Environment, Environment.id == Dek.environment_id)
                .where(
                    Environment.policy_id == policy_id,
                    Environment.state != "deleted",
                    Dek.state != "destroyed",
                    DekWrap.state == "current",
                    DekWrap.vault_id == p.vault_id,
                    DekWrap.key_name == p.key_name,
                )
                .distinct()
            )
        )
        vault_id, key_name = p.vault_id, p.key_name
        soft_delete = vrec.soft_delete_days if vrec else None
    reasons: list[str] = []
    vault = rt.vault(vault_id)
    info = vault.info()
    days = info.soft_delete_days if info.soft_delete_days is not None else soft_delete
    if days is not None and days < MIN_SOFT_DELETE_DAYS:
        reasons.append(
            f"vault {info.name!r} keeps deleted keys {days} days; at least {MIN_SOFT_DELETE_DAYS} are "
            "needed to recover a deleted key before disabled environments are deleted"
        )
    kinfo = vault.describe(KeyRef(vault.name, key_name))
    for v in kinfo.versions:
        if v.version in versions and not v.enabled:
            reasons.append(
                f"version {v.version} of key {vault.name}/{key_name} is disabled while data keys of "
                "linked environments are still wrapped under it"
            )
    if kinfo.purge_after is not None and not kinfo.deleted:
        when = utc(kinfo.purge_after)
        if when - rt.clock.now() <= DELETION_WARNING:
            reasons.append(f"key {vault.name}/{key_name} is scheduled for deletion at {iso_z(when)}")
    return reasons


def _store_warnings(rt: Runtime, policy_id: str, report: HealthReport, extra: list[str]) -> None:
    with rt.transaction() as s:
        p = s.scalars(select(Policy).where(Policy.id == policy_id).with_for_update()).first()
        if p is None:
            return
        before = (p.health, list(p.health_reasons or []))
        reasons = list(report.reasons) + [r for r in extra if r not in report.reasons]
        p.health = "warning"
        p.health_reasons = reasons
        if before != (p.health, reasons):
            audit_trail.record(
                rt,
                s,
                "policy.health.warning",
                target_type="policy",
                target_id=p.id,
                tenant_id=p.tenant_id,
                reason="; ".join(extra),
                details={"health": "warning", "reasons": reasons},
            )
    report.status = "warning"
    report.reasons = reasons


# -- running it -----------------------------------------------------------------------------------


def monitor_due(rt: Runtime) -> dict[str, Any]:
    """Maintenance task "health": run monitor_once if health_interval_seconds have passed."""
    state: dict[str, float] = rt.extension(_LAST_RUN, lambda _rt: {})  # per-runtime, monotonic
    now = time.monotonic()
    last = state.get("at")
    if last is not None and now - last < rt.settings.health_interval_seconds:
        return {"skipped": "not due"}
    state["at"] = now
    return {"policies": monitor_once(rt)}


def run_periodic(rt: Runtime, stop_event: threading.Event) -> None:
    """Run monitor_once every health_interval_seconds until stop_event is set."""
    interval = rt.settings.health_interval_seconds
    while not stop_event.is_set():
        started = time.monotonic()
        try:
            monitor_once(rt)
        except Exception:  # keep monitoring; the next round retries
            log.exception("health monitor round failed")
        stop_event.wait(max(0.0, interval - (time.monotonic() - started)))
