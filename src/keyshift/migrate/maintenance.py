"""Maintenance tasks: purge pre-migration copies whose window ended, detect key rotations."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from keyshift.control import audit_trail, health
from keyshift.db.models import DekWrap, Environment, Policy
from keyshift.errors import KeyshiftError
from keyshift.migrate.rewrap import rowcount
from keyshift.runtime import Runtime
from keyshift.vaults.base import KeyRef


def purge_expired_retention(rt: Runtime) -> dict[str, Any]:
    """Retained wraps past their window are destroyed (wrapped bytes wiped); environments whose
    restore window ended lose their pre-migration SQL copy of audit events and files."""
    now = rt.clock.now()
    with rt.transaction() as s:
        wraps = rowcount(
            s.execute(
                update(DekWrap)
                .where(
                    DekWrap.state == "retained",
                    DekWrap.retain_until.is_not(None),
                    DekWrap.retain_until <= now,
                )
                .values(state="destroyed", wrapped=b"")
            )
        )
        envs = list(
            s.scalars(
                select(Environment).where(
                    Environment.restore_until.is_not(None), Environment.restore_until <= now
                )
            )
        )
        purged_envs = []
        for env in envs:
            from keyshift.migrate import moves

            counts = moves.purge_sql_copy(s, env)
            env.restore_until = None
            purged_envs.append(env.id)
            audit_trail.record(
                rt,
                s,
                "environment.premigration_copy_purged",
                target_type="environment",
                target_id=env.id,
                tenant_id=env.tenant_id,
                details=counts,
            )
        if wraps:
            audit_trail.record(
                rt, s, "dek_wraps.retained_destroyed", target_type="dek_wraps", details={"count": int(wraps)}
            )
    return {"wraps_destroyed": int(wraps or 0), "environments_purged": purged_envs}


def detect_rotations(rt: Runtime, *, policy_id: str | None = None) -> dict[str, Any]:
    """A new current version of a linked policy's key: start a rotate job per environment.

    All unpinned policies (the worker's periodic check), or just `policy_id` (`policy health`).
    """
    from keyshift.migrate.link import start_rotate

    with rt.transaction() as s:
        stmt = select(Policy).where(Policy.key_version.is_(None), Policy.state != "deleted")
        if policy_id is not None:
            stmt = stmt.where(Policy.id == policy_id)
        policies = [(p.id, p.vault_id, p.key_name) for p in s.scalars(stmt)]
    started: list[str] = []
    errors: dict[str, str] = {}
    for pid, vault_id, key_name in policies:
        with rt.transaction() as s:
            linked = s.scalars(
                select(Environment.id).where(Environment.policy_id == pid, Environment.enc_mode == "cmk")
            ).all()
        if not linked:
            continue
        try:
            vault = rt.vault(vault_id)
            current = vault.describe(KeyRef(vault.name, key_name)).current_version
        except KeyshiftError as err:
            errors[pid] = err.code
            continue
        with rt.transaction() as s:
            for env in s.scalars(select(Environment).where(Environment.id.in_(linked))):
                if env.kek_key_version and env.kek_key_version != current:
                    view = start_rotate(rt, s, env, current)
                    if view is not None:
                        started.append(view["id"])
    return {"rotate_jobs": started, "errors": errors}


def policy_health(rt: Runtime, policy_ref: str) -> dict[str, Any]:
    """`policy health P`: the control plane's check, then, if the key has a new current version,
    rewrap jobs for the linked environments (rotation picked up with no downtime)."""
    view = health.policy_health(rt, policy_ref)
    rotations: dict[str, Any] = {"rotate_jobs": [], "errors": {}}
    if view["health"] in ("healthy", "warning"):
        rotations = detect_rotations(rt, policy_id=view["policy"]["id"])
    return {**view, "rotate_jobs": rotations["rotate_jobs"]}
