"""Deleting environments: the schedules for environments left disabled by a revoked key or locked by a
BYOK tenant lock, and the operator's `env delete`.

When | delete after
---|---
disabled by a revoked key, `production` | 30 days
disabled by a revoked key, any other type (`sandbox`, `developer`; `trial`/`teams` cannot hold a CMK) | 7 days
locked by a BYOK tenant lock (any type) | 28 days

An admin audit row `environment.deletion.scheduled` is written when a deletion is scheduled, and
`environment.deletion.warning` once per schedule when a maintenance run finds the deletion less than
`WARN_BEFORE` (1 day) away. `run_due_deletions(rt)` (a maintenance task) deletes what is due and
nothing early: the environment's records, audit events and files are removed from every store, its
DEKs are destroyed (wrapped bytes wiped — crypto-shredding whatever a backup might still hold), and
the environment turns `deleted`. Re-enabling / unlocking an environment clears its schedule;
`cancel_deletion` lets an operator keep a disabled or locked environment indefinitely.

`delete_now` (`env delete ENV --confirm NAME`, operator only) deletes an environment at once, in
whatever state (refused while a job holds it), the same way: crypto-shredded (every DEK and wrap
destroyed, so no copy of its data — a backup included — can be decrypted again) and its data removed
from every store. Every deletion settles the tenant (`byok_lifecycle.settle_tenant`): the tenant
lock ends when no locked environment is left, and a BYOK-off tenant whose last BYOK environment
this was finalizes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update

from keyshift.clock import utc
from keyshift.control import audit_trail
from keyshift.control.common import get_environment, operation
from keyshift.db.models import (
    AdminAuditEvent,
    DataAuditRow,
    DataFile,
    DataFileChunk,
    DataRecord,
    Dek,
    DekWrap,
    Environment,
)
from keyshift.errors import ConflictError, KeyshiftError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z

log = logging.getLogger("keyshift.deletion")

REVOKED_DAYS = {"production": 30}
REVOKED_DEFAULT_DAYS = 7
LOCKED_DAYS = 28
WARN_BEFORE = timedelta(days=1)
SCHEDULED = "environment.deletion.scheduled"
WARNING = "environment.deletion.warning"


def days_for(env: Environment, *, locked: bool = False) -> int:
    if locked:
        return LOCKED_DAYS
    return REVOKED_DAYS.get(env.type, REVOKED_DEFAULT_DAYS)


def schedule_deletion(
    rt: Runtime, s: Any, env: Environment, now: datetime, *, why: str, locked: bool = False
) -> None:
    """Set env.delete_after (inside the caller's transaction) and record the scheduling warning."""
    days = days_for(env, locked=locked)
    env.delete_after = now + timedelta(days=days)
    audit_trail.record(
        rt,
        s,
        SCHEDULED,
        target_type="environment",
        target_id=env.id,
        tenant_id=env.tenant_id,
        reason=f"{why}: environment {env.name!r} ({env.type}) will be deleted after "
        f"{iso_z(env.delete_after)} ({days} days) unless it is re-enabled, unlocked or the "
        "deletion is cancelled",
        details={"delete_after": iso_z(env.delete_after), "days": days, "state": env.state},
    )


def cancel_deletion(rt: Runtime, env_ref: str) -> dict[str, Any]:
    """`env deletion cancel ENV`: keep a disabled/locked environment; it stays disabled/locked."""
    with operation(rt, "environment.deletion.cancel", target_type="environment", target_id=env_ref) as op:
        env = get_environment(op.session, env_ref, lock=True)
        op.target_id, op.tenant_id = env.id, env.tenant_id
        if env.delete_after is None or env.state == "deleted":
            raise ConflictError(
                f"environment {env.name!r} has no scheduled deletion", code="no_deletion_scheduled"
            )
        op.details["cancelled_delete_after"] = iso_z(utc(env.delete_after))
        op.details["reason"] = f"deletion cancelled by {rt.principal}; the environment stays {env.state}"
        env.delete_after = None
        return _view(env)


def show_deletion(rt: Runtime, env_ref: str) -> dict[str, Any]:
    with rt.transaction() as s:
        return _view(get_environment(s, env_ref))


def _view(env: Environment) -> dict[str, Any]:
    return {
        "environment": {"id": env.id, "name": env.name},
        "state": env.state,
        "state_reason": env.state_reason,
        "delete_after": iso_z(env.delete_after) if env.delete_after else None,
    }


# -- the maintenance task -------------------------------------------------------------------------


def run_due_deletions(rt: Runtime) -> dict[str, Any]:
    """Warn about deletions within WARN_BEFORE (once per schedule) and delete those that are due."""
    now = rt.clock.now()
    warned = _warn_upcoming(rt, now)
    deleted: list[str] = []
    errors: dict[str, str] = {}
    with rt.transaction() as s:
        due = list(
            s.scalars(
                select(Environment.id).where(
                    Environment.delete_after.is_not(None),
                    Environment.delete_after <= now,
                    Environment.state.in_(("disabled", "locked")),
                )
            )
        )
    for env_id in due:
        try:
            if delete_environment(rt, env_id, now):
                deleted.append(env_id)
        except KeyshiftError as err:  # one failure does not stop the others
            errors[env_id] = err.code
    return {"warned": warned, "deleted": deleted, "errors": errors}


def _warn_upcoming(rt: Runtime, now: datetime) -> list[str]:
    out: list[str] = []
    with rt.transaction() as s:
        envs = s.scalars(
            select(Environment).where(
                Environment.delete_after.is_not(None),
                Environment.delete_after > now,
                Environment.delete_after <= now + WARN_BEFORE,
                Environment.state.in_(("disabled", "locked")),
            )
        ).all()
        for env in envs:
            when = iso_z(utc(env.delete_after))  # type: ignore[arg-type]
            already = s.scalars(
                select(AdminAuditEvent.details).where(
                    AdminAuditEvent.action == WARNING, AdminAuditEvent.target_id == env.id
                )
            ).all()
            if any((d or {}).get("delete_after") == when for d in already):
                continue
            audit_trail.record(
                rt,
                s,
                WARNING,
                target_type="environment",
                target_id=env.id,
                tenant_id=env.tenant_id,
                reason=f"environment {env.name!r} ({env.state}) will be deleted after {when}",
                details={"delete_after": when, "state": env.state, "state_reason": env.state_reason},
            )
            out.append(env.id)
    return out


def delete_environment(rt: Runtime, env_id: str, now: datetime) -> bool:
    """Delete a due environment: data from every store, DEKs destroyed, state `deleted`.

    The state flips in the same transaction that removes SQL data and destroys DEKs (re-checking
    that the deletion is still due and not cancelled); the document store and file storage live
    outside that transaction and are emptied afterwards — their ciphertexts are unreadable once the
    DEKs are destroyed; if emptying them fails it is logged and the leftovers stay unreadable
    (there is no automatic retry yet). The tenant is then settled in the same transaction
    (`byok_lifecycle.settle_tenant`): a tenant lock with no locked environment left ends, a BYOK-off
    tenant whose last BYOK environment this was finalizes.
    """
    with rt.transaction() as s:
        env = s.scalars(select(Environment).where(Environment.id == env_id).with_for_update()).first()
        if (
            env is None
            or env.delete_after is None
            or utc(env.delete_after) > now
            or env.state not in ("disabled", "locked")
        ):
            return False
        prior = {
            "state": env.state,
            "state_reason": env.state_reason,
            "delete_after": iso_z(utc(env.delete_after)),
        }
        reason = f"deleted after its scheduled deletion ({prior['state']}: {prior['state_reason']})"
        stores = _shred(rt, s, env, now, reason=reason, prior=prior)
        from keyshift.control.byok_lifecycle import settle_tenant

        settle_tenant(rt, s, env.tenant_id, why="deleted")
    _after_delete(rt, env_id, stores)
    log.warning("deleted environment %s after its scheduled deletion", env_id)
    return True


def delete_now(rt: Runtime, env_ref: str, *, confirm: str | None) -> dict[str, Any]:
    """`env delete ENV --confirm NAME` (operator): delete an environment now, in any state but
    `deleted`, refused while a job holds it. Crypto-shredding: every DEK and wrap of the environment
    is destroyed (wrapped bytes wiped — so a copy anywhere, a backup included, can never be
    decrypted again), its records, audit events, files, search indexes, lake exports and backups
    are deleted from every store, and the environment turns `deleted`. Irreversible."""
    from keyshift.control.common import refuse
    from keyshift.control.preconditions import running_job
    from keyshift.errors import UsageError

    action = "environment.delete"
    fields: dict[str, Any] = {"target_type": "environment", "target_id": env_ref}
    try:
        with rt.transaction() as s:
            env = get_environment(s, env_ref, lock=True)
            fields.update(target_id=env.id, tenant_id=env.tenant_id)
            if confirm != env.name:
                raise UsageError(
                    f"deleting environment {env.name!r} destroys its data and keys for good: type its "
                    "name with --confirm",
                    code="confirmation_required" if confirm is None else "confirmation_mismatch",
                )
            if env.state == "deleted":
                raise ConflictError(
                    f"environment {env.name!r} is already deleted", code="environment_deleted"
                )
            job = running_job(s, env.id)
            if job is not None:
                raise ConflictError(
                    f"environment {env.name!r} is held by job {job.id} ({job.kind}, {job.state}); wait for "
                    "it, resume it or cancel it first",
                    code="job_running",
                )
            now = rt.clock.now()
            prior = {
                "state": env.state,
                "state_reason": env.state_reason,
                "delete_after": iso_z(utc(env.delete_after)) if env.delete_after else None,
                "mode": env.enc_mode,
            }
            env_id, name, tenant_id = env.id, env.name, env.tenant_id
            stores = _shred(rt, s, env, now, reason=f"deleted by {rt.principal}", prior=prior)
            from keyshift.control.byok_lifecycle import settle_tenant

            settled = settle_tenant(rt, s, tenant_id, why="deleted")
    except KeyshiftError as err:
        raise refuse(rt, action, err, **fields) from None
    _after_delete(rt, env_id, stores)
    return {
        "environment": {"id": env_id, "name": name},
        "state": "deleted",
        "deleted_at": iso_z(now),
        "previous": prior,
        "tenant_lock_ended": bool(settled.get("lock_ended")),
        "tenant_finalized": "settle_hook" in settled,
    }


def _shred(
    rt: Runtime, s: Any, env: Environment, now: datetime, *, reason: str, prior: dict[str, Any]
) -> dict[str, str]:
    """In the caller's transaction: SQL data deleted, DEKs destroyed, state `deleted`, audited."""
    stores = dict(env.stores or {})
    counts = _delete_sql_data(s, env.id)
    env.state, env.state_changed_at, env.state_reason = "deleted", now, reason
    env.delete_after = None
    # A deleted environment no longer holds its policy (it would block `policy update/delete`).
    policy_id, env.policy_id = env.policy_id, None
    audit_trail.record(
        rt,
        s,
        "environment.delete",
        target_type="environment",
        target_id=env.id,
        tenant_id=env.tenant_id,
        reason=reason,
        details={**counts, "previous": prior, "policy": policy_id},
    )
    return stores


def _after_delete(rt: Runtime, env_id: str, stores: dict[str, str]) -> None:
    _delete_external(rt, env_id, stores)
    from keyshift.stores.envstate import env_states
    from keyshift.stores.keys import flush

    flush(rt, env_id)
    env_states(rt).invalidate(env_id)


def _delete_sql_data(s: Any, env_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    counts["records"] = s.execute(delete(DataRecord).where(DataRecord.environment_id == env_id)).rowcount
    counts["audit_rows"] = s.execute(
        delete(DataAuditRow).where(DataAuditRow.environment_id == env_id)
    ).rowcount
    file_ids = select(DataFile.file_id).where(DataFile.environment_id == env_id).scalar_subquery()
    counts["file_chunks"] = s.execute(
        delete(DataFileChunk).where(DataFileChunk.file_id.in_(file_ids))
    ).rowcount
    counts["files"] = s.execute(delete(DataFile).where(DataFile.environment_id == env_id)).rowcount
    counts.update(_delete_feature_rows(s, env_id))
    dek_ids = select(Dek.id).where(Dek.environment_id == env_id).scalar_subquery()
    counts["wraps_destroyed"] = s.execute(
        update(DekWrap)
        .where(DekWrap.dek_id.in_(dek_ids), DekWrap.state != "destroyed")
        .values(state="destroyed", wrapped=b"")
    ).rowcount
    counts["deks_destroyed"] = s.execute(
        update(Dek)
        .where(Dek.environment_id == env_id, Dek.state != "destroyed")
        .values(state="destroyed", version=Dek.version + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    return {k: int(v or 0) for k, v in counts.items()}


def _delete_feature_rows(s: Any, env_id: str) -> dict[str, int]:
    """Search indexes and postings, lake export and backup records (their objects go below)."""
    from keyshift.db.models.features import Backup, LakeExport, SearchIndex, SearchPosting

    index_ids = select(SearchIndex.id).where(SearchIndex.environment_id == env_id).scalar_subquery()
    return {
        "search_postings": s.execute(
            delete(SearchPosting).where(SearchPosting.index_id.in_(index_ids))
        ).rowcount,
        "search_indexes": s.execute(delete(SearchIndex).where(SearchIndex.environment_id == env_id)).rowcount,
        "lake_exports": s.execute(delete(LakeExport).where(LakeExport.environment_id == env_id)).rowcount,
        "backups": s.execute(delete(Backup).where(Backup.environment_id == env_id)).rowcount,
    }


def _delete_external(rt: Runtime, env_id: str, stores: dict[str, str]) -> None:
    """Empty the environment's document-store audit and file-storage files (outside SQL)."""
    far = datetime(9999, 1, 1, tzinfo=UTC)
    if stores.get("audit") == "document" or stores.get("audit_from"):
        from keyshift.stores.audit import backend as audit_backend

        try:
            audit_backend(rt, "document").purge(env_id, far)
        except Exception:  # pragma: no cover - logged; DEKs are destroyed already
            log.exception("purging the document-store audit of a deleted environment failed")
    from keyshift.stores.file_backends import backend as file_backend

    # The environment's files, then the feature objects (lake exports, backup archives) that live
    # in file storage under "<env>.<kind>" namespaces (keyshift.features.common.namespace).
    spaces = [f"{env_id}.lake", f"{env_id}.backups"]
    if stores.get("files") == "file_storage" or stores.get("files_from"):
        spaces.insert(0, env_id)
    try:
        files = file_backend(rt, "file_storage")
        for space in spaces:
            for info in files.list(space, ""):
                files.delete(space, info.path)
    except Exception:  # pragma: no cover - logged; the DEKs are destroyed already
        log.exception("deleting the file storage of a deleted environment failed")
