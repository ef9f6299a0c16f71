"""Lifecycle watch: what will happen to a customer key, and what it will take offline.

For the key of a policy, read from its vault (`describe`): each version's expiry, the key's
scheduled deletion, disabled versions, and the age of the current version; join that with the key's
coverage (control/coverage.py) so every warning says which date and which environments, data keys,
rows, events and files go offline then. A warning is raised `settings.key_warning_days` (default 30)
ahead of an expiry or a deletion; rotation age is watched when `settings.key_rotation_days` is set.

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
from keyshift.control import coverage
from keyshift.control.common import iso
from keyshift.db.models import Environment, Policy, VaultRecord
from keyshift.errors import KeyshiftError
from keyshift.runtime import Runtime
from keyshift.vaults.base import KeyInfo, KeyRef

DAY = 86400.0


def _days(delta: timedelta) -> float:
    return round(delta.total_seconds() / DAY, 2)


def key_lifecycle(
    rt: Runtime, vault_id: str, key_name: str, *, in_use: str | None = None, info: KeyInfo | None = None
) -> dict[str, Any]:
    """The structured lifecycle of one key: per version dates and coverage, plus warnings.

    `in_use` is the version a policy wraps new data keys under (its pin, else the current one)."""
    now = rt.clock.now()
    horizon = timedelta(days=rt.settings.key_warning_days)
    with rt.transaction() as s:
        rec = s.get(VaultRecord, vault_id)
        vname = rec.name if rec is not None else vault_id
    if info is None:
        vault = rt.vault(vault_id)
        info = vault.describe(KeyRef(vault.name, key_name))
    cov = coverage.key_coverage(rt, vname, key_name, vault_versions=[v.version for v in info.versions])
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
    if info.purge_after is not None and not info.deleted and utc(info.purge_after) - now <= horizon:
        warnings.append(
            _warning(
                "deletion",
                f"key {label}",
                "is scheduled for deletion",
                info.purge_after,
                now,
                cov["all_versions"],
            )
        )
    rotation_age = _rotation_age(info, now)
    limit = rt.settings.key_rotation_days
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
        "date": when.isoformat(),
        "environments": [e["name"] for e in cov["environments"]] if cov else [],
        "reason": f"{what} {verb} at {when.isoformat()} ({timing}): {offline}",
    }


def _rotation_age(info: KeyInfo, now: datetime) -> float | None:
    try:
        created = info.version_info().created_at
    except KeyshiftError:
        return None
    return _days(now - utc(created)) if created is not None else None


def policy_warnings(rt: Runtime, vault_id: str, key_name: str, in_use: str | None = None) -> list[str]:
    """The warning reasons policy health adds for the policy's key (none if the vault fails)."""
    try:
        return [w["reason"] for w in key_lifecycle(rt, vault_id, key_name, in_use=in_use)["warnings"]]
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
