"""Backups (long-term retention): encrypted snapshots of one environment, listing, purge.

A backup is one archive (keyshift.features.archive) holding the environment's records, search
index fields, audit events, lake exports and files, encrypted as a single stream (segmented
AES-256-GCM, crypto/stream.py) under the environment's "backup" DEK — wrapped by the environment's
KEK like its other DEKs, so backups follow every key change and become unreadable when the key is
revoked. Associated data binds tenant, environment and the backup id, so an archive cannot be
passed off as another backup or another environment's. The archive lives in file storage
(`<env id>.backups/<backup id>`); the `backups` row keeps its metadata, counts, SHA-256 of the
ciphertext and expiry (settings.backup_retention_days unless given). Records are read in one
statement (a consistent snapshot); see docs/BACKUPS.md for the other stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.control.refs import environment_ref
from keyshift.crypto.dek import Keyring
from keyshift.crypto.records import AssociatedData, RecordCipher
from keyshift.crypto.stream import iter_encrypt
from keyshift.db.models import Backup, DataRecord, LakeExport, SearchIndex
from keyshift.db.types import new_id
from keyshift.errors import IntegrityError, KeyshiftError, NotFoundError, UsageError
from keyshift.features import archive
from keyshift.features.common import RETENTION, namespace, objects, usable_env
from keyshift.features.search import LIVE
from keyshift.runtime import Runtime
from keyshift.stores.audit import MAX_LIMIT, AuditLog
from keyshift.stores.envstate import EnvView, env_states
from keyshift.stores.files import FileStore
from keyshift.stores.keys import data_keys
from keyshift.timefmt import iso_z

STORE = "backup"
MAX_RETENTION_DAYS = 36_500
_R = DataRecord.__table__


def backup_ad(env: EnvView, backup_id: str) -> bytes:
    return AssociatedData(env.tenant_id, env.id, STORE, STORE, backup_id).encode()


def object_path(backup_id: str) -> str:
    return f"{backup_id}.ksb"


def view(b: Backup, s: Session) -> dict[str, Any]:
    """A backup; `environment` is the {"id", "name"} reference (docs/API.md)."""
    return {
        "id": b.id,
        "environment": environment_ref(s, b.environment_id),
        "state": b.state,
        "created_at": iso_z(b.created_at),
        "expires_at": iso_z(b.expires_at),
        "size": b.size,
        "counts": dict(b.counts or {}),
        "note": b.note,
        "created_by": b.created_by,
        "purged_at": iso_z(b.purged_at) if b.purged_at else None,
    }


# -- taking a snapshot ------------------------------------------------------------------------


def _record_ciphers(rt: Runtime, env: EnvView) -> dict[bytes, RecordCipher]:
    """Every records DEK the snapshot will meet, unwrapped before the snapshot transaction."""
    with rt.transaction() as s:
        ids = list(s.scalars(select(_R.c.dek_id).where(_R.c.environment_id == env.id).distinct()))
    keys = data_keys(rt)
    return {
        bytes.fromhex(d): RecordCipher(Keyring(keys.key_for(rt, env, "records", bytes.fromhex(d))))
        for d in ids
    }


def _records(rt: Runtime, env: EnvView, counts: dict[str, int]) -> Iterator[bytes]:
    ciphers = _record_ciphers(rt, env)
    stmt = (
        select(_R.c.table_name, _R.c.record_id, _R.c.value)
        .where(_R.c.environment_id == env.id)
        .order_by(_R.c.table_name, _R.c.record_id)
        .execution_options(yield_per=1000)
    )
    # One statement: a consistent snapshot of the rows (on SQLite writers wait until it is read).
    with rt.transaction() as s:
        for table, rid, blob in s.execute(stmt):
            cipher = ciphers.get(bytes(blob[4:20]))
            if cipher is None:
                raise IntegrityError(f"record {table}/{rid} of environment {env.name!r} names an unknown key")
            try:
                plain = cipher.decrypt(
                    bytes(blob), AssociatedData(env.tenant_id, env.id, "records", table, rid)
                )
            except IntegrityError:
                raise IntegrityError(
                    f"record {table}/{rid} of environment {env.name!r} failed authentication"
                ) from None
            counts["records"] += 1
            yield from archive.entry(b"R", {"table": table, "id": rid}, [plain])


def _audit(rt: Runtime, env: EnvView, until: datetime, counts: dict[str, int]) -> Iterator[bytes]:
    """Every audit event before `until`, paged by time (events sharing the edge time are deduplicated)."""
    log = AuditLog(rt, env.id)
    since: datetime | None = None
    seen: set[str] = set()
    while True:
        page = log.query(since=since, until=until, limit=MAX_LIMIT)
        fresh = [e for e in page if e["id"] not in seen]
        for e in fresh:
            counts["audit"] += 1
            yield from archive.entry(b"A", {"id": e["id"], "at": e["at"]}, [_json(e["event"])])
        if len(page) < MAX_LIMIT:
            return
        if not fresh:
            raise IntegrityError("too many audit events share one timestamp to page through")
        edge_at = datetime.fromisoformat(page[-1]["at"])
        edge = {e["id"] for e in page if datetime.fromisoformat(e["at"]) == edge_at}
        seen = (seen | edge) if since == edge_at else edge
        since = edge_at


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _archive(rt: Runtime, env: EnvView, backup_id: str, counts: dict[str, int]) -> Iterator[bytes]:
    now = rt.clock.now()
    yield from archive.entry(
        b"H",
        {"format": archive.FORMAT, "backup": backup_id, "environment": env.id, "created_at": now.isoformat()},
    )
    with rt.transaction() as s:
        fields: dict[str, list[str]] = {}
        for g in s.scalars(
            select(SearchIndex)
            .where(SearchIndex.environment_id == env.id, SearchIndex.state.in_(LIVE))
            .order_by(SearchIndex.generation)
        ):
            fields[g.table_name] = list(g.fields)
        # Archive entry headers (JSON objects), one per lake export.
        lake: list[dict[str, Any]] = [
            {
                "path": x.path,
                "table": x.table_name,
                "rows": x.rows,
                "dek_id": x.dek_id,
                "created_at": iso_z(x.created_at),
            }
            for x in s.scalars(select(LakeExport).where(LakeExport.environment_id == env.id))
        ]
    for table, f in sorted(fields.items()):
        counts["search_tables"] += 1
        yield from archive.entry(b"S", {"table": table, "fields": f})
    yield from _records(rt, env, counts)
    yield from _audit(rt, env, now + timedelta(microseconds=1), counts)
    for item in lake:
        src = objects(rt).open(namespace(env.id, "lake"), item["path"])
        if src is None:
            continue
        with src:
            counts["lake"] += 1
            yield from archive.entry(b"L", item, archive.read_file_chunks(src))
    files = FileStore(rt, env.id)
    for info in files.list():
        with files.open(info["path"]) as src:
            counts["files"] += 1
            yield from archive.entry(b"F", {"path": info["path"]}, archive.read_file_chunks(src))
    yield from archive.entry(b"E", dict(counts))


def create_backup(
    rt: Runtime, env_ref: str, *, retention_days: int | None = None, note: str | None = None
) -> dict[str, Any]:
    """Take an encrypted snapshot of an environment (feature long-term-retention)."""
    days = rt.settings.backup_retention_days if retention_days is None else retention_days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        raise UsageError(f"retention days must be between 1 and {MAX_RETENTION_DAYS}", code="invalid_days")
    if note is not None and (not isinstance(note, str) or len(note) > 500):
        raise UsageError("a backup note is at most 500 characters", code="invalid_note")
    return take_backup(rt, usable_env(rt, env_ref, RETENTION, "environment.backup"), days, note)


def take_backup(rt: Runtime, env: EnvView, days: int, note: str | None) -> dict[str, Any]:
    backup_id = new_id("bak")
    dek = data_keys(rt).reserve(rt, env, STORE, 1)
    counts = {"records": 0, "audit": 0, "files": 0, "lake": 0, "search_tables": 0}
    digest = hashlib.sha256()

    def produce(sink: BinaryIO) -> int:
        size = 0
        for piece in iter_encrypt(dek, _archive(rt, env, backup_id, counts), backup_ad(env, backup_id)):
            sink.write(piece)
            digest.update(piece)
            size += len(piece)
        return size

    try:
        size = objects(rt).write(namespace(env.id, "backups"), object_path(backup_id), produce, dek.id.hex())
    except KeyshiftError as err:
        audit_trail.record_failure(
            rt,
            "environment.backup",
            err,
            target_type="environment",
            target_id=env.id,
            tenant_id=env.tenant_id,
        )
        raise
    now = rt.clock.now()
    with rt.transaction() as s:
        b = Backup(
            id=backup_id,
            environment_id=env.id,
            tenant_id=env.tenant_id,
            state="ready",
            dek_id=dek.id.hex(),
            kek_vault_id=env.kek_vault_id,
            kek_key_name=env.kek_key_name,
            size=size,
            sha256=digest.hexdigest(),
            counts=counts,
            note=note,
            created_by=rt.principal,
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
        s.add(b)
        audit_trail.record(
            rt,
            s,
            "environment.backup",
            target_type="environment",
            target_id=env.id,
            tenant_id=env.tenant_id,
            details={
                "backup": backup_id,
                "counts": counts,
                "size": size,
                "expires_at": iso_z(b.expires_at),
            },
        )
        s.flush()
        return view(b, s)


def list_backups(rt: Runtime, env_ref: str, *, include_purged: bool = False) -> list[dict[str, Any]]:
    env = env_states(rt).resolve(env_ref)
    with rt.transaction() as s:
        stmt = select(Backup).where(Backup.environment_id == env.id).order_by(Backup.created_at, Backup.id)
        if not include_purged:
            stmt = stmt.where(Backup.state == "ready")
        return [view(b, s) for b in s.scalars(stmt)]


def find_backup(rt: Runtime, backup_id: str) -> Backup:
    if not isinstance(backup_id, str) or not backup_id or len(backup_id) > 40:
        raise UsageError("a backup id is required", code="invalid_id")
    with rt.transaction() as s:
        b = s.get(Backup, backup_id)
        if b is None:
            raise NotFoundError(f"backup {backup_id!r} not found", code="backup_not_found")
        s.expunge(b)
    if b.state != "ready":
        raise NotFoundError(f"backup {backup_id!r} has expired and was purged", code="backup_purged")
    return b


def purge_expired_backups(rt: Runtime) -> dict[str, Any]:
    """Maintenance: backups past their expiry lose their archive; the row stays, state `purged`."""
    now = rt.clock.now()
    with rt.transaction() as s:
        due = [
            (b.id, b.environment_id, b.tenant_id)
            for b in s.scalars(select(Backup).where(Backup.state == "ready", Backup.expires_at <= now))
        ]
    purged: list[str] = []
    for backup_id, env_id, tenant_id in due:
        objects(rt).delete(namespace(env_id, "backups"), object_path(backup_id))
        with rt.transaction() as s:
            b = s.get(Backup, backup_id)
            if b is None or b.state != "ready":
                continue
            b.state, b.purged_at = "purged", now
            audit_trail.record(
                rt,
                s,
                "environment.backup.purged",
                target_type="environment",
                target_id=env_id,
                tenant_id=tenant_id,
                details={"backup": backup_id, "expired_at": iso_z(b.expires_at)},
            )
        purged.append(backup_id)
    return {"purged": purged}
