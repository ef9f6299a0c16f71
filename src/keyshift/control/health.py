"""Policy health: validate a policy's key the way an operator would, then prove it with a real
wrap/unwrap round trip as the policy identity.

Checks, in order: the vault is reachable and has soft delete and purge protection on; the key exists,
is not deleted, is enabled; the version in use (pinned, else current) is enabled and inside
not-before/expires; the type is RSA 2048/3072, or AES-256 on a vault that holds AES keys natively
(an HSM, a KMIP server, a cloud KMS); the identity holds get, wrapKey and unwrapKey; a random
32-byte value wraps and unwraps back to itself.

Vault failures are read by their outcome (vaults/base.py): a *refusal* (the key owner's answer) makes
the policy `unhealthy` with its evidence — which vault, which check, what it answered; an
*unreachable* vault counts toward the grace period (a monitor check first keeps probing on fresh
connections for a short window, so a vault that flaps up and down is not an outage); a *local*
failure of this process (credentials, PIN, module, config) stores nothing and is raised: one
process's setup never changes the policy's shared health.

Result: `healthy`, `warning` (usable, but e.g. the key expires within 30 days or the vault was
briefly unreachable inside the grace period), `unhealthy` (unusable: the reasons say why) or
`undetermined` (never checked, or the vault unreachable when it had never been checked). The result,
reasons, check time and observed key version are stored on the policy. `check_policy` is reusable
(the revocation worker calls it); it never holds a DB transaction across vault calls.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm.exc import StaleDataError

from keyshift.clock import utc
from keyshift.control import audit_trail, lifecycle
from keyshift.control.common import get_policy, iso
from keyshift.db.models import Policy, VaultRecord
from keyshift.errors import ConflictError, KeyshiftError, NotFoundError, VaultUnavailableError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z
from keyshift.vaults.base import (
    LOCAL,
    REFUSED,
    UNREACHABLE,
    KeyInfo,
    KeyRef,
    KeyType,
    KeyVault,
    Permission,
    VaultInfo,
    VaultLocalError,
    outcome_of,
)

EXPIRY_WARNING = timedelta(days=30)
ALLOWED_RSA_SIZES = (2048, 3072)
REQUIRED = (Permission.GET, Permission.WRAP, Permission.UNWRAP)


@dataclass
class HealthReport:
    policy_id: str
    status: str  # healthy | warning | unhealthy | undetermined
    reasons: list[str] = field(default_factory=list)
    checked_at: datetime | None = None
    observed_key_version: str | None = None
    current_key_version: str | None = None
    vault_reachable: bool = True
    previous_status: str | None = None
    # Why the key is unusable, when the vault said so or could not be reached: {"vault", "kind",
    # "key", "check", "answer", "outcome"}. None while the key works (or for configuration reasons).
    evidence: dict[str, Any] | None = None
    # The configuration reasons alone (vault settings, key type) make a policy unhealthy without
    # the key being unusable: linking is refused, nothing is disabled.
    config_only: bool = True
    # The vault answered during this check's outage window: an outage starts over from this check.
    restart_grace: bool = False
    # The key as the vault described it during this check (reused by the lifecycle watch, so a
    # check costs one describe of the key).
    key_info: KeyInfo | None = field(default=None, repr=False, compare=False)

    @property
    def changed(self) -> bool:
        return self.status != self.previous_status

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy_id,
            "health": self.status,
            "reasons": list(self.reasons),
            "checked_at": iso(self.checked_at),
            "observed_key_version": self.observed_key_version,
            "current_key_version": self.current_key_version,
            "vault_reachable": self.vault_reachable,
            "previous_health": self.previous_status,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class _Snapshot:
    id: str
    tenant_id: str
    vault_id: str
    vault_rec_soft_delete: int | None
    vault_rec_purge: bool
    key_name: str
    key_version: str | None
    identity: str
    health: str
    checked_at: datetime | None
    unhealthy_since: datetime | None


def check_policy(
    rt: Runtime,
    policy_ref: str,
    *,
    audit: bool = False,
    vault: KeyVault | None = None,
    outage_window: float = 0.0,
) -> HealthReport:
    """Check the policy now and store the result. Admin audit row when `audit` or health changed.

    `vault`: the adapter to check with (a fresh one for a confirmation); default the runtime's.
    `outage_window`: when the vault is unreachable, keep probing on fresh connections this many
    seconds before counting the check as failed (the monitor's guard against a flapping vault).
    A failure local to this process raises VaultLocalError and stores nothing.
    """
    with rt.transaction() as s:
        p = get_policy(s, policy_ref)
        vrec = s.get(VaultRecord, p.vault_id)
        snap = _Snapshot(
            p.id,
            p.tenant_id,
            p.vault_id,
            vrec.soft_delete_days if vrec else None,
            bool(vrec and vrec.purge_protection),
            p.key_name,
            p.key_version,
            p.identity,
            p.health,
            p.health_checked_at,
            p.unhealthy_since,
        )
    now = rt.clock.now()
    report = HealthReport(snap.id, "healthy", checked_at=now, previous_status=snap.health)
    adapter = vault if vault is not None else rt.vault(snap.vault_id)
    try:
        try:
            _evaluate(rt, adapter, snap, report, now)
        except KeyshiftError as err:
            if outcome_of(err) != UNREACHABLE or outage_window <= 0:
                raise
            back = _comes_back(rt, snap.vault_id, outage_window)
            if back is None:
                raise
            # It answered inside the window: not one continuous outage. Should it fail again
            # (a flapping vault), the grace period starts over from now.
            report = HealthReport(snap.id, "healthy", checked_at=now, previous_status=snap.health)
            report.restart_grace = True
            try:
                _evaluate(rt, back, snap, report, now)
            finally:
                _close(back)
    except KeyshiftError as err:
        outcome = outcome_of(err)
        if outcome == LOCAL:
            raise _local(adapter, err) from None
        if outcome == UNREACHABLE:
            _unreachable(rt, snap, report, now, err, adapter)
        else:  # the vault refused (or answered something we did not map to a precise reason)
            report.status = "unhealthy"
            report.config_only = False
            report.reasons.append(f"{err.code}: {err.message}")
            report.evidence = report.evidence or _evidence(adapter, snap, "vault call", err)
    if report.status in ("healthy", "warning") and report.vault_reachable:  # lifecycle watch
        for reason in lifecycle.policy_warnings(
            rt, snap.vault_id, snap.key_name, snap.key_version, info=report.key_info
        ):
            _warn(report, reason)
    return _store(rt, snap, report, audit)


def _local(vault: KeyVault, err: KeyshiftError) -> KeyshiftError:
    if isinstance(err, VaultLocalError):
        return err
    return VaultLocalError(
        f"vault {vault.name!r} cannot be used by this process: {err.message}", code=err.code
    )


def _comes_back(rt: Runtime, vault_id: str, window: float) -> KeyVault | None:
    """Probe the vault on a fresh adapter (it reconnects on every failed probe) for up to `window`
    seconds; the adapter once the vault answered, else None."""
    from keyshift.vaults.registry import open_fresh

    deadline = time.monotonic() + window
    pause = min(0.05, window / 10)  # evenly spaced: an up-time anywhere in the window is seen
    fresh: KeyVault | None = None
    while True:
        try:
            if fresh is None:
                fresh = open_fresh(rt, vault_id)
            if fresh.info().reachable:
                return fresh
        except KeyshiftError:
            pass
        if time.monotonic() + pause > deadline:
            if fresh is not None:
                _close(fresh)
            return None
        time.sleep(pause)


def _close(vault: Any) -> None:
    closer = getattr(vault, "close", None)
    if callable(closer):
        closer()


def _evidence(
    vault: KeyVault, snap: _Snapshot, check: str, answer: Any, outcome: str = REFUSED
) -> dict[str, Any]:
    text = f"{answer.code}: {answer.message}" if isinstance(answer, KeyshiftError) else str(answer)
    return {
        "vault": {"id": snap.vault_id, "name": vault.name},
        "kind": getattr(vault, "kind", None),
        "key": snap.key_name,
        "version": snap.key_version,
        "identity": snap.identity,
        "check": check,
        "answer": text,
        "outcome": outcome_of(answer) if isinstance(answer, KeyshiftError) else outcome,
    }


def _fail(report: HealthReport, reason: str) -> None:
    report.status = "unhealthy"
    report.reasons.append(reason)


def _refused(report: HealthReport, reason: str, evidence: dict[str, Any]) -> None:
    """The key is unusable by the vault's own answer (not a configuration reason)."""
    _fail(report, reason)
    report.config_only = False
    report.evidence = report.evidence or evidence


def _warn(report: HealthReport, reason: str) -> None:
    if report.status == "healthy":
        report.status = "warning"
    report.reasons.append(reason)


def _evaluate(rt: Runtime, vault: KeyVault, snap: _Snapshot, report: HealthReport, now: datetime) -> None:
    info: VaultInfo = vault.info()
    if not info.reachable:
        detail = info.detail or f"vault {info.name!r} is unreachable"
        if info.outcome == LOCAL:  # detail is "<code>: <message naming the fix>"
            code, _, message = detail.partition(": ")
            raise VaultLocalError(
                f"vault {info.name!r} cannot be used by this process: {message or detail}",
                code=code if message else None,
            )
        raise VaultUnavailableError(detail)
    soft_delete = info.soft_delete_days if info.soft_delete_days is not None else snap.vault_rec_soft_delete
    if not soft_delete:
        _fail(report, f"vault {info.name!r} does not have soft delete on")
    if not (info.purge_protection or snap.vault_rec_purge):
        _fail(report, f"vault {info.name!r} does not have purge protection on")
    ref = KeyRef(vault.name, snap.key_name, snap.key_version)
    try:
        kinfo: KeyInfo = vault.describe(KeyRef(vault.name, snap.key_name))
    except NotFoundError as err:
        _refused(
            report, f"key {vault.name}/{snap.key_name} not found", _evidence(vault, snap, "describe key", err)
        )
        return
    report.current_key_version = kinfo.current_version
    report.key_info = kinfo
    _check_key(report, kinfo, info, snap, now, vault)
    if report.status == "unhealthy":
        return
    perms = vault.check_access(ref, snap.identity)
    missing = [p.value for p in REQUIRED if p not in perms]
    if missing:
        reason = f"identity {snap.identity} lacks {', '.join(missing)} on key {ref}"
        _refused(report, reason, _evidence(vault, snap, "check access of the policy identity", reason))
        return
    probe = secrets.token_bytes(32)
    context = {"purpose": "policy-health", "policy": snap.id}
    try:
        wrapped = vault.wrap(ref, probe, identity=snap.identity, context=context)
        back = vault.unwrap(wrapped, identity=snap.identity, context=context)
    except KeyshiftError as err:
        if outcome_of(err) == REFUSED:
            report.evidence = _evidence(vault, snap, "wrap/unwrap round trip", err)
        raise
    if not secrets.compare_digest(back, probe):
        reason = "wrap/unwrap round trip returned a different value"
        _refused(report, reason, _evidence(vault, snap, "wrap/unwrap round trip", reason))
        return
    report.observed_key_version = wrapped.key.version or report.observed_key_version


def _check_key(
    report: HealthReport, k: KeyInfo, vinfo: VaultInfo, snap: _Snapshot, now: datetime, vault: KeyVault
) -> None:
    label = f"{vinfo.name}/{snap.key_name}"

    def refused(reason: str) -> None:
        _refused(report, reason, _evidence(vault, snap, "describe key", reason))

    if k.deleted:
        refused(f"key {label} is deleted")
        return
    if not k.enabled:
        refused(f"key {label} is disabled")
    if k.key_type == KeyType.RSA:
        if k.size not in ALLOWED_RSA_SIZES:
            _fail(report, f"key {label} is RSA-{k.size}; allowed: RSA 2048 or 3072")
    elif k.key_type == KeyType.AES:
        if not (vinfo.native_aes or vinfo.symmetric_only):
            _fail(
                report,
                f"key {label} is AES; AES-256 is allowed only on vaults that hold AES keys natively "
                "(PKCS#11 HSM, KMIP, cloud KMS); use RSA 2048/3072 here",
            )
        elif k.size != 256:
            _fail(report, f"key {label} is AES-{k.size}; only AES-256 is allowed")
    else:  # pragma: no cover - KeyType has two members
        _fail(report, f"key {label} has unsupported type {k.key_type}")
    try:
        v = k.version_info(snap.key_version)
    except NotFoundError:
        refused(f"key {label} has no version {snap.key_version!r}")
        return
    report.observed_key_version = v.version
    if not v.enabled:
        refused(f"version {v.version} of key {label} is disabled")
    if v.not_before is not None and now < utc(v.not_before):
        refused(f"version {v.version} of key {label} is not valid before {iso_z(utc(v.not_before))}")
    if v.expires is not None:
        expires = utc(v.expires)
        if now >= expires:
            refused(f"version {v.version} of key {label} expired at {iso_z(expires)}")
        elif expires - now <= EXPIRY_WARNING:
            _warn(
                report,
                f"version {v.version} of key {label} expires at {iso_z(expires)} (within 30 days)",
            )
    if snap.key_version and snap.key_version != k.current_version:
        _warn(
            report,
            f"policy pins version {snap.key_version}; the key's current version is {k.current_version}",
        )


def _unreachable(
    rt: Runtime, snap: _Snapshot, report: HealthReport, now: datetime, err: KeyshiftError, vault: KeyVault
) -> None:
    report.vault_reachable = False
    report.config_only = False
    reason = f"vault unreachable: {err.message}"
    report.evidence = _evidence(vault, snap, "reach the vault", err, UNREACHABLE)
    if snap.checked_at is None or snap.health == "undetermined":
        report.status, report.reasons = "undetermined", [reason]
        return
    since = now if report.restart_grace else (snap.unhealthy_since or now)
    report.evidence["unreachable_since"] = iso(utc(since))
    grace = timedelta(seconds=rt.settings.vault_grace_seconds)
    if now - utc(since) < grace:
        report.status, report.reasons = (
            "warning",
            [f"{reason} (within the {grace.total_seconds():g} s grace period)"],
        )
    else:
        report.status, report.reasons = "unhealthy", [f"{reason} (for more than {grace.total_seconds():g} s)"]


def _store(rt: Runtime, snap: _Snapshot, report: HealthReport, audit: bool) -> HealthReport:
    for attempt in range(3):  # the worker and an admin may store a result at the same moment
        try:
            return _store_once(rt, snap, report, audit)
        except StaleDataError:
            if attempt == 2:
                raise ConflictError(
                    "the policy kept changing while its health was stored; run it again",
                    code="concurrent_update",
                ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _store_once(rt: Runtime, snap: _Snapshot, report: HealthReport, audit: bool) -> HealthReport:
    failing = report.status == "unhealthy" or not report.vault_reachable
    with rt.transaction() as s:
        p = s.get(Policy, snap.id)
        if p is None or p.state == "deleted":
            raise NotFoundError(f"policy {snap.id!r} not found", code="policy_not_found")
        if (p.vault_id, p.key_name, p.key_version) != (snap.vault_id, snap.key_name, snap.key_version):
            raise ConflictError(
                "the policy's key changed during the check; run it again", code="concurrent_update"
            )
        p.health = report.status
        p.health_reasons = list(report.reasons)
        p.health_checked_at = report.checked_at
        if report.observed_key_version is not None:
            p.observed_key_version = report.observed_key_version
        if failing and report.restart_grace:
            p.unhealthy_since = report.checked_at
        elif failing:
            p.unhealthy_since = p.unhealthy_since or report.checked_at
        else:
            p.unhealthy_since = None
        if audit or report.changed:
            audit_trail.record(
                rt,
                s,
                "policy.health",
                target_type="policy",
                target_id=p.id,
                tenant_id=p.tenant_id,
                outcome="ok",
                details=report.to_dict(),
            )
    return report


def policy_health(rt: Runtime, policy_ref: str) -> dict[str, Any]:
    """`policy health P`: check now (audited) and return the stored result."""
    report = check_policy(rt, policy_ref, audit=True)
    with rt.transaction() as s:
        policy = s.get(Policy, report.policy_id)
        name = policy.name if policy is not None else None
    # The policy as a {"id", "name"} reference, like every other view (docs/API.md).
    return {**report.to_dict(), "policy": {"id": report.policy_id, "name": name}}
