"""Lifecycle watch: what will happen to a customer key, and what it will take offline.

For the key of a policy, read from its vault (`describe`): each version's expiry, the key's
scheduled deletion, disabled versions, and the age of the current version; join that with the key's
coverage (control/coverage.py) so every warning says which date and which environments, data keys,
rows, events and files go offline then. A warning is raised `settings.key_warning_days` (default 30)
ahead of an expiry or a deletion; rotation age is watched when `settings.key_rotation_days` is set.

Automatic rotation: a policy may carry a rotation period (`set_rotation`, `policy rotation P --days
N`); the maintenance task `rotate_due` rotates the key in its vault once the current version is that
old, and starts the existing `rotate` rewrap jobs for the environments (audited).

`policy_warnings` is what policy health adds (as `warning` reasons); `key_lifecycle` is the
structured view behind it, and `lifecycle_numbers` the numbers for metrics (days left, data keys
covered per version). Vault errors never fail the caller: health already reports an unreachable
vault, so a failed read here adds nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from keyshift.clock import utc
from keyshift.control import audit_trail, coverage
from keyshift.control.common import get_policy, iso
from keyshift.db.models import Environment, Policy, VaultRecord
from keyshift.errors import ConflictError, KeyshiftError, UsageError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z
from keyshift.vaults.base import KeyInfo, KeyManager, KeyRef

DAY = 86400.0


def _days(delta: timedelta) -> float:
    return round(delta.total_seconds() / DAY, 2)


def key_lifecycle(
    rt: Runtime, vault_id: str, key_name: str, *, in_use: str | None = None, info: KeyInfo | None = None
) -> dict[str, Any]:
    """The structured lifecycle of one key: per version dates and coverage, plus warnings.

    `in_use` is the version a policy wraps new data keys under (its pin, else the current one)."""
    now = rt.clock.now()
    with rt.transaction() as s:
        rec = s.get(VaultRecord, vault_id)
        vname = rec.name if rec is not None else vault_id
    if info is None:
        vault = rt.vault(vault_id)
        info = vault.describe(KeyRef(vault.name, key_name))
    names = [v.version for v in info.versions]
    # The wraps alone say which versions cover data (cheap); the counts (a file header scan among
    # them) are only read when a warning needs to say what goes offline.
    cov = coverage.key_coverage(rt, vname, key_name, vault_versions=names, counts=False)
    view = _build(rt, info, cov, (vault_id, vname), key_name, in_use, now)
    if view["warnings"]:
        cov = coverage.key_coverage(rt, vname, key_name, vault_versions=names)
        view = _build(rt, info, cov, (vault_id, vname), key_name, in_use, now)
    return view


def _build(
    rt: Runtime,
    info: KeyInfo,
    cov: dict[str, Any],
    vault: tuple[str, str],
    key_name: str,
    in_use: str | None,
    now: datetime,
) -> dict[str, Any]:
    horizon = timedelta(days=rt.settings.key_warning_days)
    vault_id, vname = vault
    by_version = {v["version"]: v for v in cov["versions"]}
    label = f"{vname}/{key_name}"
    in_use = in_use or info.current_version
    warnings: list[dict[str, Any]] = []
    versions: list[dict[str, Any]] = []
    for v in info.versions:
        c = by_version.get(v.version)
        covered = bool(c and c["covered"])
        row: dict[str, Any] = {
            "version": v.version,
            "enabled": v.enabled,
            "expires": iso(utc(v.expires)) if v.expires else None,
            "days_to_expiry": _days(utc(v.expires) - now) if v.expires else None,
            "data_keys": c["data_keys"]["total"] if c else 0,
            "environments": [e["name"] for e in c["environments"]] if c else [],
        }
        versions.append(row)
        if v.expires is not None and (covered or v.version == in_use):
            left = utc(v.expires) - now
            if left <= horizon:
                warnings.append(
                    _warning("expiry", f"version {v.version} of key {label}", "expires", v.expires, now, c)
                    | {"version": v.version}
                )
        if not v.enabled and c is not None and covered:
            warnings.append(
                {
                    "kind": "disabled",
                    "version": v.version,
                    "date": None,
                    "environments": [e["name"] for e in c["environments"]],
                    "reason": f"version {v.version} of key {label} is disabled while it still covers "
                    + coverage.summary(c),
                }
            )
    if info.purge_after is not None and utc(info.purge_after) - now <= horizon:
        # A vault that reports a future deletion date, or a soft-deleted key that will be purged
        # (already unusable: health is unhealthy; the date still says when it is gone for good).
        verb = "is soft-deleted and will be purged" if info.deleted else "is scheduled for deletion"
        warnings.append(
            _warning("deletion", f"key {label}", verb, info.purge_after, now, cov["all_versions"])
        )
    rotation_age = _rotation_age(info, now)
    limit = _rotation_limit(rt, vault_id, key_name)
    if limit is not None and rotation_age is not None and rotation_age >= limit:
        warnings.append(
            {
                "kind": "rotation",
                "version": info.current_version,
                "date": None,
                "environments": [],
                "reason": f"the current version {info.current_version} of key {label} is "
                f"{int(rotation_age)} days old (rotate every {limit} days)",
            }
        )
    return {
        "vault": vname,
        "key": key_name,
        "current_version": info.current_version,
        "deleted": info.deleted,
        "scheduled_deletion": iso(utc(info.purge_after)) if info.purge_after else None,
        "days_to_deletion": _days(utc(info.purge_after) - now) if info.purge_after else None,
        "rotation_age_days": rotation_age,
        "rotation_days": limit,
        "versions": versions,
        "warnings": warnings,
    }


def _warning(
    kind: str, what: str, verb: str, when: datetime, now: datetime, cov: dict[str, Any] | None
) -> dict[str, Any]:
    when = utc(when)
    left = when - now
    timing = f"in {left.days} days" if left.total_seconds() > 0 else "already passed"
    offline = (
        f"it will take offline {coverage.summary(cov)}"
        if cov and cov["covered"]
        else "it covers no data yet, but new data keys are wrapped under it"
    )
    return {
        "kind": kind,
        "version": None,
        "date": iso_z(when),
        "environments": [e["name"] for e in cov["environments"]] if cov else [],
        "reason": f"{what} {verb} at {iso_z(when)} ({timing}): {offline}",
    }


def _rotation_limit(rt: Runtime, vault_id: str, key_name: str) -> int | None:
    """The shortest rotation period that applies: the setting, or a policy's own period."""
    with rt.transaction() as s:
        periods = [
            d
            for d in s.scalars(
                select(Policy.rotation_days).where(
                    Policy.vault_id == vault_id, Policy.key_name == key_name, Policy.state != "deleted"
                )
            )
            if d is not None
        ]
    if rt.settings.key_rotation_days is not None:
        periods.append(rt.settings.key_rotation_days)
    return min(periods) if periods else None


def _rotation_age(info: KeyInfo, now: datetime) -> float | None:
    try:
        created = info.version_info().created_at
    except KeyshiftError:
        return None
    return _days(now - utc(created)) if created is not None else None


def policy_warnings(
    rt: Runtime, vault_id: str, key_name: str, in_use: str | None = None, *, info: KeyInfo | None = None
) -> list[str]:
    """The warning reasons policy health adds for the policy's key (none if the vault fails).

    `info` is the key as the health check just described it (saves a second describe)."""
    try:
        view = key_lifecycle(rt, vault_id, key_name, in_use=in_use, info=info)
        return [w["reason"] for w in view["warnings"]]
    except KeyshiftError:
        return []


def lifecycle_numbers(rt: Runtime) -> list[dict[str, Any]]:
    """Per customer key of a policy (not deleted): days to expiry per version, days to deletion,
    rotation age and data keys covered per version; `error` when the vault could not be read."""
    with rt.transaction() as s:
        keys = sorted(
            set(s.execute(select(Policy.vault_id, Policy.key_name).where(Policy.state != "deleted")).tuples())
        )
        # Keys that environments are bound to directly (e.g. BYOK keys) are watched too.
        keys = sorted(
            set(keys)
            | {
                (v, k)
                for v, k in s.execute(
                    select(Environment.kek_vault_id, Environment.kek_key_name).where(
                        Environment.state != "deleted", Environment.enc_mode != "platform"
                    )
                ).tuples()
                if v and k
            }
        )
    out: list[dict[str, Any]] = []
    for vault_id, key in keys:
        try:
            view = key_lifecycle(rt, vault_id, key)
            view["warnings"] = len(view["warnings"])
            out.append(view)
        except KeyshiftError as exc:
            out.append({"vault": vault_id, "key": key, "error": exc.code})
    return out


# -- automatic rotation ---------------------------------------------------------------------------

MAX_ROTATION_DAYS = 3650


def set_rotation(rt: Runtime, policy_ref: str, days: int | None) -> dict[str, Any]:
    """Turn a policy's automatic rotation on (every `days` days) or off (None). Audited."""
    try:
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_ROTATION_DAYS
        ):
            raise UsageError(
                f"rotation period must be 1-{MAX_ROTATION_DAYS} days, got {days!r}", code="invalid_rotation"
            )
        with rt.transaction() as s:
            p = get_policy(s, policy_ref)
            before = p.rotation_days
            p.rotation_days = days
            s.flush()
            audit_trail.record(
                rt,
                s,
                "policy.rotation.set",
                target_type="policy",
                target_id=p.id,
                tenant_id=p.tenant_id,
                details={"rotation_days": days, "before": before},
            )
            return {
                "policy": {"id": p.id, "name": p.name},
                "rotation_days": days,
                "pinned_version": p.key_version,
            }
    except KeyshiftError as exc:
        audit_trail.record_failure(
            rt, "policy.rotation.set", exc, target_type="policy", target_id=str(policy_ref)[:200]
        )
        raise


def rotate_due(rt: Runtime) -> dict[str, Any]:
    """Maintenance task: rotate the key of every policy whose rotation period has passed since its
    current version was created (in its vault, audited), then start the rewrap jobs of the
    environments on it (the existing `rotate` job, no downtime). Pinned policies are skipped; a vault
    that cannot rotate keys gets `expected` (the customer must add a version; health warns)."""
    from keyshift.control import vaults as vault_admin
    from keyshift.migrate.maintenance import detect_rotations

    now = rt.clock.now()
    with rt.transaction() as s:
        due = [
            (p.id, p.name, p.tenant_id, p.vault_id, p.key_name, int(p.rotation_days or 0))
            for p in s.scalars(
                select(Policy)
                .where(
                    Policy.rotation_days.is_not(None), Policy.state != "deleted", Policy.key_version.is_(None)
                )
                .order_by(Policy.created_at, Policy.id)
            )
        ]
    rotated: list[dict[str, Any]] = []
    expected: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    jobs: list[str] = []
    for pid, name, tenant_id, vault_id, key, days in due:
        try:
            vault = rt.vault(vault_id)
            info = vault.describe(KeyRef(vault.name, key))
            age = _rotation_age(info, now)
            if age is None or age < days or info.deleted:
                continue
            if not isinstance(vault, KeyManager):
                expected.append({"policy": name, "key": f"{vault.name}/{key}", "age_days": age})
                continue
            try:
                view = vault_admin.rotate_key(rt, vault.name, key)
            except ConflictError as err:
                if err.code not in ("not_supported", "unsupported_operation"):
                    raise
                expected.append({"policy": name, "key": f"{vault.name}/{key}", "age_days": age})
                continue
            with rt.transaction() as s:
                audit_trail.record(
                    rt,
                    s,
                    "policy.rotation.automatic",
                    target_type="policy",
                    target_id=pid,
                    tenant_id=tenant_id,
                    details={
                        "key": f"{vault.name}/{key}",
                        "from": info.current_version,
                        "to": view["current_version"],
                        "age_days": age,
                        "rotation_days": days,
                    },
                )
            rotated.append(
                {
                    "policy": name,
                    "key": f"{vault.name}/{key}",
                    "from": info.current_version,
                    "to": view["current_version"],
                }
            )
            jobs += detect_rotations(rt, policy_id=pid)["rotate_jobs"]
        except KeyshiftError as err:
            errors[pid] = err.code
    return {"rotated": rotated, "rotate_jobs": jobs, "expected": expected, "errors": errors}
