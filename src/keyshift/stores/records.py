"""The SQL record store: put, get, put_many, delete, scan per table of one environment.

A value is a JSON document (dict, list, str, number, bool, None) or bytes; the plaintext starts
with a one-byte type tag (b"J" JSON in UTF-8, b"B" raw bytes) and is encrypted with AES-256-GCM
under the store's primary DEK, associated data = (tenant, environment, "records", table, id).

Every row has a version (1 on insert, +1 on each write). `put(..., expected_version=n)` is a
compare-and-swap: it writes only if the stored version is still n (0 = "must not exist yet"),
else ConflictError "version_conflict". Tables exist while they hold rows.

Encryption and decryption never run inside a DB transaction: they may need the vault or the DEK
budget counter, which open their own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from keyshift.crypto.dek import DataKeyExhaustedError
from keyshift.crypto.records import AssociatedData, RecordCipher
from keyshift.db.models import DataRecord
from keyshift.errors import ConflictError, IntegrityError, KeyshiftError, NotFoundError, UsageError
from keyshift.runtime import Runtime
from keyshift.stores.envstate import EnvView, env_states
from keyshift.stores.keys import data_keys

STORE = "records"
TABLE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
ID_RE = re.compile(r"^[A-Za-z0-9_.:@+=~-]{1,512}$")
TAG_JSON = b"J"
TAG_BYTES = b"B"
MAX_VALUE_BYTES = 16 << 20
DEFAULT_SCAN_LIMIT = 1000
MAX_SCAN_LIMIT = 10_000
MAX_BATCH = 10_000  # ids per get_many / put_many_if_versions call
_IN_CHUNK = 500  # ids per SQL IN list

_T: Table = DataRecord.__table__  # type: ignore[assignment]

# Derived indexes kept in step with writes (additive hook; the search index uses it). Each entry
# "module:function" is called as fn(rt, env, table, changes) before a write's transaction, with
# changes = [(record id, value, or None for a delete)]; it returns None or a function run with the
# session inside the write's transaction, after the row write (so both commit together).
WRITE_HOOKS: list[str] = ["keyshift.features.search:record_write_hook"]
_resolved_hooks: list[Any] | None = None


def _write_hooks() -> list[Any]:
    global _resolved_hooks
    if _resolved_hooks is None:
        import importlib

        found = []
        for target in WRITE_HOOKS:
            module, attr = target.split(":")
            try:
                found.append(getattr(importlib.import_module(module), attr))
            except (ModuleNotFoundError, AttributeError):
                continue
        _resolved_hooks = found
    return _resolved_hooks


def _prepare_hooks(rt: Runtime, env: EnvView, table: str, changes: list[tuple[str, Any]]) -> list[Any]:
    out = []
    for hook in _write_hooks():
        fn = hook(rt, env, table, changes)
        if fn is not None:
            out.append(fn)
    return out


class TableAd:
    """Associated data of many records of one table, encoding the shared fields only once.

    Equal to `AssociatedData(tenant, environment, store, table, id)` field for field and byte for
    byte (docs/FORMAT.md: each field is a u32 big-endian length and its UTF-8 bytes, in order); it
    only skips re-encoding the four fields every record of the table shares.
    """

    __slots__ = ("base", "prefix")

    def __init__(self, base: AssociatedData) -> None:
        self.base = base
        encoded = base.encode()
        empty_id = len(base.record_id.encode("utf-8")) + 4
        self.prefix = encoded[:-empty_id] if empty_id else encoded

    def with_record(self, record_id: str) -> AssociatedData:
        raw = record_id.encode("utf-8")
        if len(raw) > 512:  # record ids are validated first; never build a different encoding
            return self.base.with_record(record_id)
        ad = object.__new__(AssociatedData)
        b = self.base
        for name, value in (
            ("tenant", b.tenant),
            ("environment", b.environment),
            ("store", b.store),
            ("collection", b.collection),
            ("record_id", record_id),
            ("_encoded", self.prefix + len(raw).to_bytes(4, "big") + raw),
        ):
            object.__setattr__(ad, name, value)
        return ad


@dataclass(frozen=True)
class Record:
    id: str
    value: Any
    version: int
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, bytes):
            value = {"$bytes": value.hex()}
        return {
            "id": self.id,
            "version": self.version,
            "updated_at": self.updated_at.isoformat(),
            "value": value,
        }


def validate_table(table: object) -> str:
    if not isinstance(table, str) or not TABLE_RE.match(table):
        raise UsageError(
            f"invalid table name {table!r}: 1-128 letters, digits, '_', '.', '-' "
            "(not starting with '.' or '-')",
            code="invalid_table",
        )
    return table


def validate_id(record_id: object) -> str:
    if not isinstance(record_id, str) or not ID_RE.match(record_id) or record_id in (".", ".."):
        raise UsageError(
            f"invalid record id {record_id!r}: 1-512 letters, digits or _ . : @ + = ~ - "
            "(no '/', backslash, NUL)",
            code="invalid_id",
        )
    return record_id


def encode_value(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        data = TAG_BYTES + bytes(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"value is not JSON-serialisable: {exc}", code="invalid_value") from None
        try:
            data = TAG_JSON + text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (e.g. "\ud800") has no UTF-8 form. The codec's message would quote
            # the character and its position in the value: say only what is wrong.
            raise UsageError(
                "value holds text that is not valid Unicode (a lone surrogate)", code="invalid_value"
            ) from None
    if len(data) > MAX_VALUE_BYTES:
        raise UsageError(f"a record value holds at most {MAX_VALUE_BYTES} bytes", code="value_too_large")
    return data


def decode_value(data: bytes) -> Any:
    tag, body = data[:1], data[1:]
    if tag == TAG_BYTES:
        return body
    if tag == TAG_JSON:
        return json.loads(body)
    raise IntegrityError("unknown value type")


def _upsert(dialect: str) -> Any:
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_T)
    return ins.on_conflict_do_update(
        index_elements=[_T.c.environment_id, _T.c.table_name, _T.c.record_id],
        set_={
            "value": ins.excluded.value,
            "dek_id": ins.excluded.dek_id,
            "updated_at": ins.excluded.updated_at,
            "version": _T.c.version + 1,
        },
    )


def _cas_update() -> Any:
    return (
        update(_T)
        .where(
            _T.c.environment_id == bindparam("b_env"),
            _T.c.table_name == bindparam("b_table"),
            _T.c.record_id == bindparam("b_id"),
            _T.c.version == bindparam("b_version"),
        )
        .values(
            value=bindparam("b_value"),
            dek_id=bindparam("b_dek"),
            updated_at=bindparam("b_at"),
            version=_T.c.version + 1,
        )
    )


def _insert_new(dialect: str) -> Any:
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_T)
    return ins.on_conflict_do_nothing(index_elements=[_T.c.environment_id, _T.c.table_name, _T.c.record_id])


class RecordStore:
    """Records of one environment. Obtain through `stores.service.EnvironmentData`."""

    def __init__(self, rt: Runtime, env_id: str) -> None:
        self.rt = rt
        self.env_id = env_id
        self._keys = data_keys(rt)
        self._states = env_states(rt)
        self._dialect = rt.engine.dialect.name
        self._upsert = _upsert(self._dialect)
        self._insert_new = _insert_new(self._dialect)

    # -- helpers -----------------------------------------------------------------------------
    def _env(self) -> EnvView:
        return self._states.require_usable(self.env_id)

    def _ad(self, env: EnvView, table: str, record_id: str) -> AssociatedData:
        return AssociatedData(env.tenant_id, env.id, STORE, table, record_id)

    def _encrypt_all(
        self, env: EnvView, table: str, items: list[tuple[str, bytes]]
    ) -> list[tuple[str, bytes]]:
        """Encrypt (id, plaintext) pairs under the primary DEK; roll to a new DEK when it runs out."""
        out: list[tuple[str, bytes]] = []
        base = TableAd(self._ad(env, table, ""))
        while len(out) < len(items):
            cipher: RecordCipher = self._keys.cipher(self.rt, env, STORE)
            dek_id = cipher.keyring.primary.id
            nbytes = 0
            try:
                for rid, plain in items[len(out) :]:
                    out.append((rid, cipher.encrypt(plain, base.with_record(rid))))
                    nbytes += len(plain)
            except DataKeyExhaustedError:
                self._keys.roll(self.rt, env, STORE, dek_id)
            finally:
                self._keys.note_use(env.id, dek_id, nbytes)
        return out

    def _decrypt(self, env: EnvView, table: str, record_id: str, blob: bytes) -> Any:
        try:
            if len(blob) < 20:
                raise IntegrityError("ciphertext is malformed")
            dek_id = bytes(blob[4:20])
            cipher = self._keys.decrypter(self.rt, env, STORE, dek_id)
            plain = cipher.decrypt(blob, self._ad(env, table, record_id))
            self._keys.note_use(env.id, dek_id, len(plain))
            return decode_value(plain)
        except IntegrityError:
            raise IntegrityError(
                f"record {table}/{record_id} of environment {env.name!r} failed authentication "
                "(stored ciphertext is corrupt or was moved)"
            ) from None
        except ValueError:  # JSON decode of an authenticated plaintext: should not happen
            raise IntegrityError(f"record {table}/{record_id} holds an undecodable value") from None

    def _table_exists(self, table: str) -> bool:
        with self.rt.transaction() as s:
            return (
                s.execute(
                    select(_T.c.record_id)
                    .where(_T.c.environment_id == self.env_id, _T.c.table_name == table)
                    .limit(1)
                ).first()
                is not None
            )

    def _not_found(self, table: str, record_id: str) -> KeyshiftError:
        if not self._table_exists(table):
            return NotFoundError(f"table {table!r} not found", code="table_not_found")
        return NotFoundError(f"record {table}/{record_id} not found", code="record_not_found")

    # -- writes ------------------------------------------------------------------------------
    def put(self, table: str, record_id: str, value: Any, *, expected_version: int | None = None) -> int:
        """Write a record; returns its new version. With expected_version: compare-and-swap."""
        validate_table(table)
        validate_id(record_id)
        if expected_version is not None and (
            isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
            or expected_version < 0
        ):
            raise UsageError("expected_version must be an integer >= 0", code="invalid_version")
        plain = encode_value(value)
        env = self._env()
        [(_, blob)] = self._encrypt_all(env, table, [(record_id, plain)])
        hooks = _prepare_hooks(self.rt, env, table, [(record_id, value)])
        row = {
            "environment_id": env.id,
            "table_name": table,
            "record_id": record_id,
            "version": 1,
            "dek_id": blob[4:20].hex(),
            "value": blob,
            "updated_at": self.rt.clock.now(),
        }
        with self.rt.transaction() as s:
            if expected_version is None:
                version = int(s.execute(self._upsert.returning(_T.c.version), row).scalar_one())
                for fn in hooks:
                    fn(s)
                return version
            if expected_version == 0:
                if s.execute(self._insert_new.returning(_T.c.version), row).first() is None:
                    raise ConflictError(
                        f"record {table}/{record_id} already exists (expected it absent)",
                        code="version_conflict",
                    )
                for fn in hooks:
                    fn(s)
                return 1
            res = s.execute(
                update(_T)
                .where(
                    _T.c.environment_id == env.id,
                    _T.c.table_name == table,
                    _T.c.record_id == record_id,
                    _T.c.version == expected_version,
                )
                .values(
                    value=blob, dek_id=row["dek_id"], updated_at=row["updated_at"], version=_T.c.version + 1
                )
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise ConflictError(
                    f"record {table}/{record_id} is not at version {expected_version}",
                    code="version_conflict",
                )
            for fn in hooks:
                fn(s)
            return expected_version + 1

    def put_many(self, table: str, items: Iterable[tuple[str, Any]]) -> int:
        """Write many records of one table in one transaction (one executemany). Returns the count."""
        validate_table(table)
        plain: dict[str, bytes] = {}
        values: dict[str, Any] = {}
        for item in items:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise UsageError("put_many takes (id, value) pairs", code="invalid_value")
            rid, value = item
            plain[validate_id(rid)] = encode_value(value)  # a repeated id: the last value wins
            values[rid] = value
        if not plain:
            return 0
        env = self._env()
        blobs = self._encrypt_all(env, table, list(plain.items()))
        now = self.rt.clock.now()
        rows = [
            {
                "environment_id": env.id,
                "table_name": table,
                "record_id": rid,
                "version": 1,
                "dek_id": blob[4:20].hex(),
                "value": blob,
                "updated_at": now,
            }
            for rid, blob in blobs
        ]
        hooks = _prepare_hooks(self.rt, env, table, list(values.items()))
        with self.rt.transaction() as s:
            s.execute(self._upsert, rows)
            for fn in hooks:
                fn(s)
        return len(rows)

    def put_many_if_versions(self, table: str, items: Iterable[tuple[str, Any, int]]) -> list[str]:
        """Compare-and-swap many records of one table in ONE write transaction.

        `items` are (id, value, expected version >= 1) triples. Each row is written only if its
        stored version is still the expected one (then version + 1); a row changed or deleted since
        it was read lost the race and is left exactly as it is (never overwritten, never recreated).
        Returns the ids written, in id order. Encryption and write-hook preparation run before the
        transaction, which locks the rows, keeps those still at their version and updates them in
        one executemany. If some rows lost the race and write hooks were prepared, the hooks are
        prepared again for the winners only, so derived indexes follow exactly the rows written.
        """
        validate_table(table)
        entries: dict[str, tuple[bytes, Any, int]] = {}
        for item in items:
            if not isinstance(item, tuple | list) or len(item) != 3:
                raise UsageError(
                    "put_many_if_versions takes (id, value, expected version) triples", code="invalid_value"
                )
            rid, value, version = item
            validate_id(rid)
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise UsageError("expected_version must be an integer >= 1", code="invalid_version")
            if rid in entries:
                raise UsageError(f"record id {rid!r} appears twice in one batch", code="invalid_value")
            entries[rid] = (encode_value(value), value, version)
        if len(entries) > MAX_BATCH:
            raise UsageError(f"at most {MAX_BATCH} records per batch", code="invalid_value")
        if not entries:
            return []
        env = self._env()
        ids = sorted(entries)  # one lock order for every batch writer
        blobs = dict(self._encrypt_all(env, table, [(rid, entries[rid][0]) for rid in ids]))
        now = self.rt.clock.now()
        stmt = _cas_update()
        pending = ids
        while pending:
            hooks = _prepare_hooks(self.rt, env, table, [(rid, entries[rid][1]) for rid in pending])
            with self.rt.transaction() as s:
                # Lock the rows (PostgreSQL FOR UPDATE; SQLite transactions hold the write lock),
                # keep those still at their expected version, then one executemany of the UPDATEs.
                if len(pending) == 1:  # one row: the version-checked UPDATE alone (shortest lock)
                    won = self._cas_one(s, stmt, env.id, table, pending[0], entries, blobs, now)
                    for fn in hooks if won else ():
                        fn(s)
                    return won
                current: dict[str, int] = {}
                for i in range(0, len(pending), _IN_CHUNK):
                    current.update(
                        s.execute(
                            select(_T.c.record_id, _T.c.version)
                            .where(
                                _T.c.environment_id == env.id,
                                _T.c.table_name == table,
                                _T.c.record_id.in_(pending[i : i + _IN_CHUNK]),
                            )
                            .order_by(_T.c.record_id)
                            .with_for_update()
                        ).all()
                    )
                won = [rid for rid in pending if current.get(rid) == entries[rid][2]]
                if hooks and len(won) != len(pending):
                    pending = won  # prepare the hooks again for the winners only
                    continue
                if won:
                    res = s.execute(
                        stmt,
                        [
                            {
                                "b_env": env.id,
                                "b_table": table,
                                "b_id": rid,
                                "b_version": entries[rid][2],
                                "b_value": blobs[rid],
                                "b_dek": blobs[rid][4:20].hex(),
                                "b_at": now,
                            }
                            for rid in won
                        ],
                    )
                    if res.rowcount != len(won):  # type: ignore[attr-defined]
                        raise IntegrityError("record versions changed under a row lock")
                for fn in hooks:
                    fn(s)
            return won
        return []

    @staticmethod
    def _cas_one(
        s: Any,
        stmt: Any,
        env_id: str,
        table: str,
        rid: str,
        entries: dict[str, tuple[bytes, Any, int]],
        blobs: dict[str, bytes],
        now: datetime,
    ) -> list[str]:
        blob = blobs[rid]
        params = {"b_env": env_id, "b_table": table, "b_id": rid, "b_version": entries[rid][2]}
        params |= {"b_value": blob, "b_dek": blob[4:20].hex(), "b_at": now}
        return [rid] if s.execute(stmt, params).rowcount == 1 else []

    def delete(self, table: str, record_id: str, *, expected_version: int | None = None) -> None:
        validate_table(table)
        validate_id(record_id)
        env = self._env()
        hooks = _prepare_hooks(self.rt, env, table, [(record_id, None)])
        with self.rt.transaction() as s:
            stmt = delete(_T).where(
                _T.c.environment_id == env.id, _T.c.table_name == table, _T.c.record_id == record_id
            )
            if expected_version is not None:
                stmt = stmt.where(_T.c.version == expected_version)
            res = s.execute(stmt)
            deleted = res.rowcount == 1  # type: ignore[attr-defined]
            if deleted:
                for fn in hooks:
                    fn(s)
        if not deleted:
            if expected_version is not None and self._exists(table, record_id):
                raise ConflictError(
                    f"record {table}/{record_id} is not at version {expected_version}",
                    code="version_conflict",
                )
            raise self._not_found(table, record_id)

    def _exists(self, table: str, record_id: str) -> bool:
        with self.rt.transaction() as s:
            return (
                s.execute(
                    select(_T.c.version).where(
                        _T.c.environment_id == self.env_id,
                        _T.c.table_name == table,
                        _T.c.record_id == record_id,
                    )
                ).first()
                is not None
            )

    # -- reads -------------------------------------------------------------------------------
    def get_record(self, table: str, record_id: str) -> Record:
        validate_table(table)
        validate_id(record_id)
        env = self._env()
        with self.rt.transaction() as s:
            row = s.execute(
                select(_T.c.value, _T.c.version, _T.c.updated_at).where(
                    _T.c.environment_id == env.id, _T.c.table_name == table, _T.c.record_id == record_id
                )
            ).first()
        if row is None:
            raise self._not_found(table, record_id)
        return Record(record_id, self._decrypt(env, table, record_id, row[0]), row[1], row[2])

    def get_many(self, table: str, ids: Iterable[str]) -> list[Record]:
        """Records by id, in id order; ids that do not exist are left out (no error).

        One read transaction (one query per 500 ids); decryption runs after it. A row that fails
        authentication raises IntegrityError, as `get` does.
        """
        validate_table(table)
        wanted = sorted({validate_id(rid) for rid in ids})
        if len(wanted) > MAX_BATCH:
            raise UsageError(f"at most {MAX_BATCH} records per batch", code="invalid_value")
        if not wanted:
            return []
        env = self._env()
        rows: list[Any] = []
        with self.rt.transaction() as s:
            for i in range(0, len(wanted), _IN_CHUNK):
                rows += s.execute(
                    select(_T.c.record_id, _T.c.value, _T.c.version, _T.c.updated_at).where(
                        _T.c.environment_id == env.id,
                        _T.c.table_name == table,
                        _T.c.record_id.in_(wanted[i : i + _IN_CHUNK]),
                    )
                ).all()
        rows.sort(key=lambda r: r[0])
        return [
            Record(rid, self._decrypt(env, table, rid, bytes(blob)), ver, at) for rid, blob, ver, at in rows
        ]

    def get(self, table: str, record_id: str) -> Any:
        return self.get_record(table, record_id).value

    def scan(self, table: str, after: str | None = None, limit: int = DEFAULT_SCAN_LIMIT) -> list[Record]:
        """Records of a table in id order, starting after `after`, at most `limit` of them."""
        validate_table(table)
        if after is not None:
            validate_id(after)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SCAN_LIMIT:
            raise UsageError(f"limit must be between 1 and {MAX_SCAN_LIMIT}", code="invalid_limit")
        env = self._env()
        stmt = (
            select(_T.c.record_id, _T.c.value, _T.c.version, _T.c.updated_at)
            .where(_T.c.environment_id == env.id, _T.c.table_name == table)
            .order_by(_T.c.record_id)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(_T.c.record_id > after)
        with self.rt.transaction() as s:
            rows = s.execute(stmt).all()
        if not rows and after is None:
            raise NotFoundError(f"table {table!r} not found", code="table_not_found")
        return [Record(rid, self._decrypt(env, table, rid, blob), ver, at) for rid, blob, ver, at in rows]

    def iter_all(self, table: str, page: int = DEFAULT_SCAN_LIMIT) -> Iterable[Record]:
        """Every record of a table, page by page."""
        after: str | None = None
        while True:
            try:
                batch = self.scan(table, after=after, limit=page)
            except NotFoundError:
                return
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].id

    def tables(self) -> list[dict[str, Any]]:
        self._env()
        with self.rt.transaction() as s:
            rows = s.execute(
                select(_T.c.table_name, func.count())
                .where(_T.c.environment_id == self.env_id)
                .group_by(_T.c.table_name)
                .order_by(_T.c.table_name)
            ).all()
        return [{"table": t, "records": n} for t, n in rows]
