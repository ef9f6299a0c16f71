"""Restoring a backup into its environment, and copying an environment into another one.

Two passes over the archive. The first decrypts and parses all of it (and checks the ciphertext's
SHA-256 against the backup row, the header and the end counts): a corrupt, truncated or foreign
archive, or a backup key that is gone, is refused before anything is touched. The second applies
it: records and search index in ONE transaction of the state database (all or nothing; the keys it
needs are unwrapped and the encryption budget reserved beforehand, so no vault call runs inside it),
then audit events, lake exports and files, each replacing what the environment held. Only an
infrastructure failure during that second part (store unreachable, disk full) can leave audit or
files partly restored; rerunning the restore completes it (docs/BACKUPS.md).

`env copy SRC DST` (the seed's rule): only between environments of one tenant encrypted under the
same key; it takes a backup of SRC and restores it into DST (lake exports are not copied: their
Parquet keys are bound to SRC — re-export in DST).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from sqlalchemy import Table, delete, func, insert, select

from keyshift.control import audit_trail
from keyshift.crypto.dek import DataKey, Keyring
from keyshift.crypto.records import AssociatedData, RecordCipher
from keyshift.crypto.stream import DecryptingReader
from keyshift.db.models import Backup, DataRecord, LakeExport, SearchIndex
from keyshift.db.types import new_id
from keyshift.errors import ConflictError, IntegrityError, KeyInaccessibleError, KeyshiftError, UsageError
from keyshift.features import archive
from keyshift.features.backups import backup_ad, find_backup, object_path, take_backup
from keyshift.features.common import SEARCH, namespace, objects, refuse, usable_env
from keyshift.features.search import _P, LIVE, posting_rows, table_key
from keyshift.runtime import Runtime
from keyshift.stores.audit import AuditLog
from keyshift.stores.audit import backend as audit_backend
from keyshift.stores.envstate import EnvView, env_states
from keyshift.stores.files import FileStore, validate_path
from keyshift.stores.keys import UNKNOWN_KEY, data_keys
from keyshift.stores.layout import choose
from keyshift.stores.records import MAX_VALUE_BYTES, decode_value

_R = cast(Table, DataRecord.__table__)  # a declarative `__table__` is typed FromClause
ROWS = 1000
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


class _Hashing(io.RawIOBase):
    def __init__(self, src: BinaryIO) -> None:
        super().__init__()
        self.src, self.digest = src, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.src.read(len(memoryview(b)))
        n = len(data or b"")
        memoryview(b).cast("B")[:n] = data or b""
        self.digest.update(data or b"")
        return n

    def close(self) -> None:
        self.src.close()
        super().close()


class _Body(io.RawIOBase):
    """A file object over an entry's body chunks (files are restored streaming)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self.chunks, self.buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.buf:
            nxt = next(self.chunks, None)
            if nxt is None:
                return 0
            self.buf = nxt
        out = memoryview(b).cast("B")
        n = min(out.nbytes, len(self.buf))
        out[:n], self.buf = self.buf[:n], self.buf[n:]
        return n


def _corrupt(b: Backup) -> IntegrityError:
    return IntegrityError(f"backup {b.id} is corrupt or failed authentication")


def _backup_key(rt: Runtime, b: Backup, src: EnvView) -> DataKey:
    try:
        return data_keys(rt).key_for(rt, src, "backup", bytes.fromhex(b.dek_id))
    except IntegrityError as err:
        if err.message != UNKNOWN_KEY:
            raise
        raise KeyInaccessibleError(
            f"the key of backup {b.id} is no longer available", code="backup_key_unavailable"
        ) from None


def _open(rt: Runtime, b: Backup, src: EnvView, key: DataKey) -> tuple[BinaryIO, _Hashing]:
    raw = objects(rt).open(namespace(b.environment_id, "backups"), object_path(b.id))
    if raw is None:
        raise IntegrityError(f"the archive of backup {b.id} is missing")
    hashing = _Hashing(raw)

    def key_for(dek_id: bytes) -> DataKey:
        if dek_id != key.id:
            raise IntegrityError("unknown data key")
        return key

    try:
        reader = DecryptingReader(hashing, key_for, backup_ad(src, b.id))  # type: ignore[arg-type]
    except IntegrityError:
        hashing.close()
        raise _corrupt(b) from None
    return io.BufferedReader(reader, buffer_size=1 << 20), hashing  # type: ignore[return-value]


def verify(rt: Runtime, b: Backup, src: EnvView, key: DataKey) -> dict[str, Any]:
    """Decrypt and parse the whole archive; what it holds. IntegrityError if anything is off."""
    reader, hashing = _open(rt, b, src, key)
    counts = {"records": 0, "audit": 0, "files": 0, "lake": 0, "search_tables": 0}
    fields: dict[str, list[str]] = {}
    try:
        with reader:
            it = archive.entries(reader)
            head = next(it)
            if (
                head.kind != "H"
                or head.header.get("backup") != b.id
                or head.header.get("environment") != src.id
            ):
                raise IntegrityError(archive.CORRUPT)
            for e in it:
                if e.kind == "S":
                    fields[str(e.header["table"])] = [str(f) for f in e.header["fields"]]
                    counts["search_tables"] += 1
                elif e.kind == "R":
                    decode_value(e.body(MAX_VALUE_BYTES + 1))
                    counts["records"] += 1
                elif e.kind in ("A", "F", "L"):
                    e.drain()
                    counts[{"A": "audit", "F": "files", "L": "lake"}[e.kind]] += 1
                elif e.kind == "E" and {k: e.header.get(k) for k in counts} != counts:
                    raise IntegrityError(archive.CORRUPT)
        if hashing.digest.hexdigest() != b.sha256:
            raise IntegrityError(archive.CORRUPT)
    except (IntegrityError, KeyError, TypeError, ValueError, StopIteration):
        raise _corrupt(b) from None
    return {"counts": counts, "fields": fields}


def _apply(rt: Runtime, b: Backup, src: EnvView, dst: EnvView, key: DataKey, plan: dict[str, Any]) -> None:
    same = src.id == dst.id
    keys = data_keys(rt)
    cipher = RecordCipher(Keyring(keys.reserve(rt, dst, "records", max(1, plan["counts"]["records"]))))
    fields: dict[str, list[str]] = plan["fields"] if SEARCH in dst.features else {}
    search_dek = keys.primary(rt, dst, "search")[0].id.hex() if fields else ""
    table_keys = {t: table_key(rt, dst, t, search_dek) for t in fields}
    reader, _ = _open(rt, b, src, key)
    with reader:
        it = archive.entries(reader)
        next(it)  # H, checked by verify
        pending = _records_and_search(rt, it, dst, cipher, fields, search_dek, table_keys)
        _rest(rt, it, pending, dst, same)


def _records_and_search(
    rt: Runtime,
    it: Iterator[archive.Entry],
    dst: EnvView,
    cipher: RecordCipher,
    fields: dict[str, list[str]],
    search_dek: str,
    table_keys: dict[str, bytes],
) -> archive.Entry:
    now = rt.clock.now()
    with rt.transaction() as s:
        s.execute(delete(_R).where(_R.c.environment_id == dst.id))
        olds = list(
            s.scalars(
                select(SearchIndex).where(SearchIndex.environment_id == dst.id, SearchIndex.state.in_(LIVE))
            )
        )
        for old in olds:
            old.state = "retired"
            s.execute(_P.delete().where(_P.c.index_id == old.id))
        gens: dict[str, str] = {}
        for table in fields:
            top = s.scalar(
                select(func.max(SearchIndex.generation)).where(
                    SearchIndex.environment_id == dst.id, SearchIndex.table_name == table
                )
            )
            g = SearchIndex(
                id=new_id("six"),
                environment_id=dst.id,
                table_name=table,
                generation=(top or 0) + 1,
                fields=fields[table],
                dek_id=search_dek,
                state="active",
                kek_vault_id=dst.kek_vault_id,
                kek_key_name=dst.kek_key_name,
                started_at=now,
                ready_at=now,
            )
            s.add(g)
            gens[table] = g.id
        s.flush()
        rows: list[dict[str, Any]] = []
        postings: list[dict[str, Any]] = []
        for e in it:
            if e.kind == "S":
                continue
            if e.kind != "R":
                _flush(s, rows, postings)
                return e
            table, rid = str(e.header["table"]), str(e.header["id"])
            plain = e.body(MAX_VALUE_BYTES + 1)
            blob = cipher.encrypt(plain, AssociatedData(dst.tenant_id, dst.id, "records", table, rid))
            rows.append(
                {
                    "environment_id": dst.id,
                    "table_name": table,
                    "record_id": rid,
                    "version": 1,
                    "dek_id": blob[4:20].hex(),
                    "value": blob,
                    "updated_at": now,
                }
            )
            if table in gens:
                postings += posting_rows(
                    gens[table], table_keys[table], fields[table], [(rid, decode_value(plain))]
                )
            if len(rows) >= ROWS:
                _flush(s, rows, postings)
    raise IntegrityError(archive.CORRUPT)  # verify saw an E entry


def _flush(s: Any, rows: list[dict[str, Any]], postings: list[dict[str, Any]]) -> None:
    if rows:
        s.execute(insert(_R), rows)
    if postings:
        s.execute(insert(_P), postings)
    rows.clear()
    postings.clear()


def _rest(rt: Runtime, it: Iterator[archive.Entry], e: archive.Entry, dst: EnvView, same: bool) -> None:
    choice = choose(dst, "audit")
    for name in filter(None, (choice.backend, choice.legacy)):
        audit_backend(rt, name).purge(dst.id, FAR_FUTURE)
    log = AuditLog(rt, dst.id)
    files = FileStore(rt, dst.id)
    kept_files: set[str] = set()
    lake_rows: list[dict[str, Any]] = []
    while True:
        if e.kind == "A":
            log.append(
                json.loads(e.body(1 << 24)),
                event_id=str(e.header["id"]) if same else None,
                at=datetime.fromisoformat(str(e.header["at"])),
            )
        elif e.kind == "L" and same:
            item = dict(e.header)
            validate_path(str(item["path"]))  # authenticated, but checked like any path
            item["size"] = objects(rt).write(
                namespace(dst.id, "lake"), item["path"], _copier(e.chunks()), item["dek_id"]
            )
            lake_rows.append(item)
        elif e.kind == "F":
            path = str(e.header["path"])
            files.put(path, _Body(e.chunks()))  # type: ignore[arg-type]
            kept_files.add(path)
        elif e.kind == "E":
            break
        e = next(it)
    for f in files.list():
        if f["path"] not in kept_files:
            files.delete(f["path"])
    if same:
        _replace_lake_rows(rt, dst, lake_rows)


def _copier(chunks: Iterator[bytes]) -> Any:
    def produce(sink: BinaryIO) -> int:
        n = 0
        for c in chunks:
            sink.write(c)
            n += len(c)
        return n

    return produce


def _replace_lake_rows(rt: Runtime, dst: EnvView, items: list[dict[str, Any]]) -> None:
    keep = {i["path"] for i in items}
    with rt.transaction() as s:
        current = {
            x.path: x for x in s.scalars(select(LakeExport).where(LakeExport.environment_id == dst.id))
        }
    for path in current:
        if path not in keep:
            objects(rt).delete(namespace(dst.id, "lake"), path)
    with rt.transaction() as s:
        s.execute(delete(LakeExport).where(LakeExport.environment_id == dst.id))
        for i in items:
            s.add(
                LakeExport(
                    id=new_id("lkx"),
                    environment_id=dst.id,
                    table_name=i["table"],
                    path=i["path"],
                    rows=int(i["rows"]),
                    size=int(i.get("size", 0)),
                    dek_id=i["dek_id"],
                    created_at=datetime.fromisoformat(i["created_at"]),
                )
            )


def _run(rt: Runtime, b: Backup, src: EnvView, dst: EnvView, action: str) -> dict[str, Any]:
    try:
        key = _backup_key(rt, b, src)
        plan = verify(rt, b, src, key)
        _apply(rt, b, src, dst, key, plan)
    except KeyshiftError as err:
        raise refuse(rt, action, dst, err) from None
    env_states(rt).invalidate(dst.id)
    with rt.transaction() as s:
        audit_trail.record(
            rt,
            s,
            action,
            target_type="environment",
            target_id=dst.id,
            tenant_id=dst.tenant_id,
            details={"backup": b.id, "source": src.id, "counts": plan["counts"]},
        )
    return {
        "environment": {"id": dst.id, "name": dst.name},
        "backup": b.id,
        "source": {"id": src.id, "name": src.name},
        "restored": plan["counts"],
    }


def restore_backup(rt: Runtime, env_ref: str, backup_id: str) -> dict[str, Any]:
    """Restore a backup into the environment it was taken from (replacing its data)."""
    env = usable_env(rt, env_ref, None, "environment.restore_backup")
    b = find_backup(rt, backup_id)
    if b.environment_id != env.id:
        raise refuse(
            rt,
            "environment.restore_backup",
            env,
            ConflictError(
                f"backup {b.id} belongs to another environment (and its key); a backup restores only "
                "into its own environment — use `env copy SRC DST` between environments under one key",
                code="backup_other_environment",
            ),
        )
    return _run(rt, b, env, env, "environment.restore_backup")


def copy_environment(rt: Runtime, src_ref: str, dst_ref: str) -> dict[str, Any]:
    """Copy SRC's data into DST (replacing it): same tenant and same key only."""
    action = "environment.copy"
    src = usable_env(rt, src_ref, None, action)
    dst = usable_env(rt, dst_ref, None, action)
    if src.id == dst.id:
        raise UsageError("source and destination are the same environment", code="same_environment")
    if src.tenant_id != dst.tenant_id:
        raise refuse(
            rt,
            action,
            dst,
            ConflictError("environments of different tenants cannot be copied", code="different_tenant"),
        )
    if (src.kek_vault_id, src.kek_key_name) != (dst.kek_vault_id, dst.kek_key_name):
        raise refuse(
            rt,
            action,
            dst,
            ConflictError(
                f"environment {dst.name!r} is not encrypted under the same key as {src.name!r}; "
                "copy only into an environment encrypted under the same key",
                code="different_key",
            ),
        )
    view = take_backup(rt, src, rt.settings.backup_retention_days, f"copy to {dst.name}")
    return _run(rt, find_backup(rt, view["id"]), src, dst, action)
