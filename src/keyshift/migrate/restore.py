"""`env restore ENV --before-migration`: within the retention window (28 days after a BYOK -> CMK
migration) bring the environment back to BYOK and the SQL layout — online, as a key change like
any other (migrate/keychange.py with the moves of migrate/moves.py run backwards).

What the environment holds afterwards is its CURRENT content, not a snapshot of the migration
day: records always live in SQL and are rewrapped under the BYOK key with every other DEK; audit
events and files are copied from the document store / file storage into the SQL layout, including
every write and delete made after the migration and during the restore. The pre-migration SQL copy
of the files is set aside at cutover and dropped at the end (it can only be older). Features that
need storage outside SQL are turned off (their data is kept, see moves.settle_features).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyshift.db.models import Dek, DekWrap, Job
from keyshift.errors import ConflictError
from keyshift.jobs import store
from keyshift.migrate.common import find_environment
from keyshift.runtime import Runtime


def last_byok_link(session: Session, env_id: str) -> Job | None:
    for job in session.scalars(
        select(Job)
        .where(Job.environment_id == env_id, Job.kind == "link", Job.state == "succeeded")
        .order_by(Job.finished_at.desc())
    ):
        if job.params.get("from_byok"):
            return job
    return None


def start_restore(rt: Runtime, env_ref: str) -> dict[str, Any]:
    from keyshift.control.common import operation

    with operation(
        rt, "environment.restore_before_migration", target_type="environment", target_id=env_ref
    ) as op:
        s = op.session
        env = find_environment(s, env_ref, lock=True)
        op.target_id, op.tenant_id = env.id, env.tenant_id
        now = rt.clock.now()
        if env.migrated_from_byok_at is None or env.enc_mode != "cmk":
            raise ConflictError(
                f"environment {env.name!r} has no BYOK migration to undo", code="no_migration_to_restore"
            )
        if env.restore_until is None or now >= env.restore_until:
            raise ConflictError(
                f"the restore window of environment {env.name!r} has ended; the pre-migration copy was "
                "purged",
                code="restore_window_over",
            )
        link = last_byok_link(s, env.id)
        if link is None or "source" not in link.checkpoint:
            raise ConflictError("the pre-migration binding is unknown", code="no_migration_to_restore")
        src = link.checkpoint["source"]
        byok_target = {
            "vault_id": src["kek_vault_id"],
            "key_name": src["kek_key_name"],
            "identity": src["kek_identity"],
            "key_version": src["kek_key_version"],
        }
        params = {
            "target": "byok",
            "byok_target": byok_target,
            "layout": src["stores"],
            "link_job": link.id,
            "return_audit": bool(link.params.get("move_audit")),
            "return_files": bool(link.params.get("move_files")),
        }
        job = store.create_job(
            rt,
            s,
            "restore",
            environment_id=env.id,
            tenant_id=env.tenant_id,
            policy_id=env.policy_id,
            params=params,
        )
        op.details = {"job": job.id, "link_job": link.id}
        return store.to_view(job)


def drop_retained_wraps(session: Session, env_id: str) -> int:
    """After a restore the retained (pre-migration) wraps are redundant: destroy them."""
    ids = select(Dek.id).where(Dek.environment_id == env_id).scalar_subquery()
    rows = (
        session.execute(select(DekWrap.id).where(DekWrap.state == "retained", DekWrap.dek_id.in_(ids)))
        .scalars()
        .all()
    )
    if rows:
        session.execute(delete(DekWrap).where(DekWrap.id.in_(rows)))
    return len(rows)
