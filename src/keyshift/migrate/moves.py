"""Moving a BYOK environment's audit events and files out of SQL (link) and back (restore).

At cutover the layout becomes a transition: {"audit": "document", "audit_from": "sql"} (and
{"files": "file_storage", "files_from": "sql"}), so every write goes to the new store while reads,
queries and lists see the union (new first) — clients notice nothing. Batches then copy the frozen
legacy set (the SQL rows as of cutover, by sequence range) into the new store, re-encrypted under
fresh DEKs wrapped by the new key; a copy that is already there (a rerun after a crash, or a newer
write for a file) is left alone, so a batch can run any number of times. At the end the layout
loses its `_from` entry. The SQL copy itself is kept: it is the pre-migration copy that
`env restore --before-migration` uses, purged by maintenance when the window ends.

A restore runs the same machinery backwards ({"audit": "sql", "audit_from": "document"}): a key
change like any other, online. At its cutover the retained pre-migration SQL files are set aside in
the same transaction as the layout flip (files_bridge.stash_sql_files), so the SQL destination
starts empty exactly as file storage did for the link: reads see client writes made during the
restore first, then file storage's current content — never an older pre-migration copy. Batches
copy file storage's files and the document store's events into SQL, put-if-absent (a client write
wins; a file deleted meanwhile stays deleted), the sweep catches in-flight items, and the finish
drops the new-store copies, the stash and the features a BYOK layout cannot hold.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from keyshift.clock import utc
from keyshift.db.models import DataAuditRow, DataFile, DataFileChunk, Dek, Environment, Job
from keyshift.errors import ConflictError, InternalError, KeyshiftError
from keyshift.jobs.context import BatchContext
from keyshift.migrate.rewrap import rowcount
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys

AUDIT_BATCH = 200
FILE_BATCH = 8

FORWARD = {"audit": ("document", "sql"), "files": ("file_storage", "sql")}
BACKWARD = {"audit": ("sql", "document"), "files": ("sql", "file_storage")}


def transition_layout(
    stores: dict[str, str], params: dict[str, Any], *, backward: bool = False
) -> dict[str, str]:
    out = dict(stores)
    table = BACKWARD if backward else FORWARD
    for kind in ("audit", "files"):
        flag = ("return_" if backward else "move_") + kind
        if params.get(flag):
            new, old = table[kind]
            out[kind] = new
            out[f"{kind}_from"] = old
    return out


def end_transition(env: Environment, layout: dict[str, str] | None = None) -> None:
    stores = dict(layout) if layout else dict(env.stores or {})
    for kind in ("audit", "files"):
        stores.pop(f"{kind}_from", None)
    env.stores = stores


def _retire(session: Session, env_id: str, store: str) -> None:
    """Fresh DEKs for the copies: the next write makes a new one under the current binding."""
    session.execute(
        update(Dek)
        .where(Dek.environment_id == env_id, Dek.store == store, Dek.state == "active")
        .values(state="retired", version=Dek.version + 1)
        .execution_options(synchronize_session=False)
    )


# -- planning ---------------------------------------------------------------------------------


def plan(rt: Runtime, session: Session, job: Job, phase: str) -> list[dict[str, Any]]:
    env_id = job.environment_id or ""
    kind = "audit" if phase.endswith("audit") else "files"
    backward = phase.startswith("return_")
    if not backward:
        # (the worker's cached primary DEK is dropped at the start of each batch, outside any
        # transaction: flushing here would take the key cache's lock while holding the DB's)
        _retire(session, env_id, "audit" if kind == "audit" else "files")
    if kind == "audit":
        seqs = _audit_seqs(rt, session, env_id, source="document" if backward else "sql")
        size = int(job.params.get("audit_batch", AUDIT_BATCH))
    else:
        seqs = _file_paths(rt, session, env_id, source="file_storage" if backward else "sql")
        size = int(job.params.get("file_batch", FILE_BATCH))
    job.items_total += len(seqs)
    specs = []
    for i in range(0, len(seqs), size):
        chunk = seqs[i : i + size]
        specs.append({"kind": kind, "backward": backward, "items": chunk})
    return specs


def _audit_seqs(rt: Runtime, session: Session, env_id: str, source: str) -> list[Any]:
    if source == "sql":
        return list(
            session.scalars(
                select(DataAuditRow.event_id)
                .where(DataAuditRow.environment_id == env_id)
                .order_by(DataAuditRow.seq)
            )
        )
    from keyshift.stores.docstore import audit_events, document_store

    t = audit_events
    with document_store(rt).engine.begin() as conn:
        return list(
            conn.execute(select(t.c.event_id).where(t.c.environment_id == env_id).order_by(t.c.seq)).scalars()
        )


def _file_paths(rt: Runtime, session: Session, env_id: str, source: str) -> list[Any]:
    if source == "sql" and session is not None:
        return list(
            session.scalars(
                select(DataFile.path).where(DataFile.environment_id == env_id).order_by(DataFile.path)
            )
        )
    from keyshift.migrate import files_bridge

    return files_bridge.list_paths(rt, env_id, "file_storage")


# -- before the point of no return ---------------------------------------------------------------

UNMOVABLE_SHOWN = 5


def validate_sources(rt: Runtime, session: Session, job: Job) -> None:
    """Every file about to move must have a place in the destination: a path the API accepts
    today, short enough for the file storage's keys. Checked in `prepare`, before the cutover,
    so a refusal leaves the job cancellable and the environment as it was."""
    from keyshift.stores.file_backends import max_path_bytes
    from keyshift.stores.files import MAX_PATH_BYTES, validate_path

    env_id = job.environment_id or ""
    p = job.params
    paths: list[str] = []
    if p.get("move_files"):
        paths = _file_paths(rt, session, env_id, source="sql")
    elif p.get("return_files"):
        paths = _file_paths(rt, session, env_id, source="file_storage")
    if not paths:
        return
    cap = max_path_bytes(rt, MAX_PATH_BYTES)
    bad: list[str] = []
    for path in paths:
        try:
            validate_path(path)
            ok = len(path.encode("utf-8")) <= cap
        except KeyshiftError:
            ok = False
        if not ok:
            bad.append(path)
    if bad:
        shown = ", ".join(repr(b[:80]) for b in bad[:UNMOVABLE_SHOWN])
        more = f" and {len(bad) - UNMOVABLE_SHOWN} more" if len(bad) > UNMOVABLE_SHOWN else ""
        raise ConflictError(
            f"{len(bad)} file(s) of this environment have paths the destination cannot hold "
            f"({shown}{more}): rename or delete them (`keyshift files put` / the API), then "
            "`keyshift job resume`, or `keyshift job cancel` to stay as it is",
            code="unmovable_file_paths",
        )


# -- batches ----------------------------------------------------------------------------------


def run_batch(rt: Runtime, ctx: BatchContext) -> None:
    spec = ctx.spec
    env_id = ctx.job.environment_id or ""
    if not spec["backward"] and spec["kind"] == "files":
        data_keys(rt).flush(env_id)  # copies go under a fresh DEK (the retired one is not reused)
    if spec["kind"] == "audit":
        n = _copy_events(rt, env_id, spec["items"], source="document" if spec["backward"] else "sql", ctx=ctx)
        nbytes = 0
    else:
        from keyshift.migrate import files_bridge

        n, nbytes = files_bridge.copy_files(
            rt, env_id, spec["items"], source="file_storage" if spec["backward"] else "sql", ctx=ctx
        )
    with rt.transaction() as s:
        ctx.finish(s, len(spec["items"]), nbytes)
    del n


def _copy_events(rt: Runtime, env_id: str, event_ids: list[str], *, source: str, ctx: BatchContext) -> int:
    """Decrypt each event from `source` and append it (same id and time) to the env's current audit
    backend; an event already there is skipped."""
    from keyshift.migrate.rekey import copy_events
    from keyshift.stores.audit import backend

    events = _events_by_id(rt, backend(rt, source), env_id, event_ids)
    # plaintext bytes carried, no JSON round trip; forward copies under a fresh DEK
    return copy_events(rt, env_id, events, fresh=source == "sql", point=ctx.point, job_id=ctx.job.id)


def _events_by_id(
    rt: Runtime, src: Any, env_id: str, event_ids: list[str]
) -> list[tuple[str, datetime, bytes]]:
    """The stored events with these ids, in the order given (the plan lists them in stored order).

    Looked up by the unique event id alone, the environment checked here: with the environment in
    the WHERE clause SQLite chose the (environment, time) index and walked every event of the
    environment once per batch (a move of 100,000 events slowed as it went)."""
    if src.name == "sql":
        with rt.transaction() as s:
            rows = s.execute(
                select(
                    DataAuditRow.event_id, DataAuditRow.environment_id, DataAuditRow.at, DataAuditRow.payload
                ).where(DataAuditRow.event_id.in_(event_ids))
            ).all()
        found = {e: (e, utc(a), bytes(p)) for e, env, a, p in rows if env == env_id}
    else:
        from keyshift.stores.docstore import audit_events, document_store, from_doc

        t = audit_events
        with document_store(rt).engine.begin() as conn:
            rows = conn.execute(
                select(t.c.event_id, t.c.environment_id, t.c.at, t.c.doc).where(t.c.event_id.in_(event_ids))
            ).all()
        found = {e: (e, utc(a), from_doc(d)) for e, env, a, d in rows if env == env_id}
    return [found[e] for e in event_ids if e in found]


def sweep(rt: Runtime, ctx: Any) -> dict[str, int]:
    """Items still only in the old store (a write in flight at cutover): copy them now."""
    p = ctx.job.params
    env_id = ctx.job.environment_id or ""
    out = {"audit": 0, "files": 0}
    for kind in ("audit", "files"):
        backward = bool(p.get(f"return_{kind}"))
        if not (backward or p.get(f"move_{kind}")):
            continue
        new, old = (BACKWARD if backward else FORWARD)[kind]
        with rt.transaction() as s:
            if kind == "audit":
                in_old = set(_audit_seqs(rt, s, env_id, source=old))
                in_new = set(_audit_seqs(rt, s, env_id, source=new))
            else:
                in_old = set(_file_paths(rt, s, env_id, source=old))
                in_new = set(_file_paths(rt, s, env_id, source=new))
        missing = sorted(in_old - in_new)
        if not missing:
            continue
        if kind == "audit":
            _copy_events(rt, env_id, missing, source=old, ctx=ctx)
        else:
            from keyshift.migrate import files_bridge

            files_bridge.copy_files(rt, env_id, missing, source=old, ctx=ctx)
        out[kind] = len(missing)
    return out


# -- after the window / after a restore --------------------------------------------------------


def purge_sql_copy(session: Session, env: Environment) -> dict[str, int]:
    """The pre-migration SQL copy of an environment no longer in the SQL layout: delete it."""
    stores = env.stores or {}
    out = {"audit_rows": 0, "files": 0}
    if stores.get("audit") not in (None, "sql") and "audit_from" not in stores:
        out["audit_rows"] = rowcount(
            session.execute(delete(DataAuditRow).where(DataAuditRow.environment_id == env.id))
        )
    if stores.get("files") not in (None, "sql") and "files_from" not in stores:
        fids = select(DataFile.file_id).where(DataFile.environment_id == env.id).scalar_subquery()
        session.execute(delete(DataFileChunk).where(DataFileChunk.file_id.in_(fids)))
        out["files"] = rowcount(session.execute(delete(DataFile).where(DataFile.environment_id == env.id)))
    return out


def drop_new_store_copies(
    rt: Runtime, session: Session, env_id: str, params: dict[str, Any], job_id: str
) -> None:
    """After a restore: the document-store / file-storage copies are redundant, and so is the
    pre-migration SQL copy set aside at cutover."""
    if params.get("return_audit"):
        from keyshift.stores.docstore import audit_events, document_store

        with document_store(rt).engine.begin() as conn:
            conn.execute(delete(audit_events).where(audit_events.c.environment_id == env_id))
    if params.get("return_files"):
        from keyshift.migrate import files_bridge

        files_bridge.drop_all(rt, env_id, "file_storage")
        files_bridge.drop_stash(session, job_id)


def settle_features(rt: Runtime, session: Session, env: Environment, job_id: str) -> list[str]:
    """After a restore to BYOK: turn off the features whose storage the SQL layout cannot hold
    (search, data lake, long-term retention, ...). Their stored data is kept, still encrypted
    (its DEKs were rewrapped under the BYOK key with the others), and is usable again once the
    environment is migrated back and the feature re-enabled."""
    from keyshift.control import audit_trail
    from keyshift.control.environments import NON_SQL_FEATURES

    off = [f for f in env.features or [] if f in NON_SQL_FEATURES]
    if off:
        env.features = [f for f in env.features if f not in NON_SQL_FEATURES]
        audit_trail.record(
            rt,
            session,
            "environment.features_disabled",
            target_type="environment",
            target_id=env.id,
            tenant_id=env.tenant_id,
            details={"features": off, "reason": "restored_to_byok", "job": job_id},
        )
    return off


def require(cond: bool, what: str) -> None:
    if not cond:
        raise InternalError(f"{what} is not available in this build")
