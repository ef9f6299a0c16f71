"""The SQL record store: put, get, put_many, delete, scan per table of one environment.

A value is a JSON document or bytes (`record_codec`), encrypted with AES-256-GCM under the store's
primary DEK, associated data = (tenant, environment, "records", table, id).

Every row has a version (1 on insert, +1 on each write). `put(..., expected_version=n)` is a
compare-and-swap: it writes only if the stored version is still n (0 = "must not exist yet"),
else ConflictError "version_conflict". Tables exist while they hold rows.

Encryption and decryption never run inside a DB transaction: they may need the vault or the DEK
budget counter, which open their own.

The hot path (docs/ARCHITECTURE.md, "Performance"): statements are written once per runtime
(`records_sql`) and run on plain DBAPI connections (reads in autocommit: on SQLite no write lock,
on PostgreSQL one round trip); the associated data of a table is encoded once and the record id
appended per record; DEKs come from `DataKeys.hot_key` (no lock or clock arithmetic per record);
the environment gate is one dict read and one monotonic comparison. Every check stays: names,
state, versions, AD binding, fail closed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from itertools import islice
from typing import Any, overload

from sqlalchemy import Table, func, select
from sqlalchemy.dialects import postgresql, sqlite

from keyshift.crypto.dek import DataKeyExhaustedError
from keyshift.crypto.format import RECORD_OVERHEAD
from keyshift.crypto.records import AssociatedData, RecordCipher, ad_prefix
from keyshift.db.engine import read_transaction
from keyshift.db.models import DataRecord
from keyshift.errors import ConflictError, IntegrityError, KeyshiftError, NotFoundError, UsageError
from keyshift.runtime import Runtime
from keyshift.stores.envstate import EnvView, env_states
from keyshift.stores.keys import HotKey, data_keys
from keyshift.stores.record_codec import (
    MAX_VALUE_BYTES,
    TAG_JSON,
    Record,
    TableAd,
    decode_json,
    decode_value,
    encode_value,
    make_record,
    validate_id,
    validate_table,
    validate_version,
)
from keyshift.stores.records_batch import BatchWrites
from keyshift.stores.records_sql import _IN_CHUNK, MAX_BATCH, executemany, record_sql

STORE = "records"
_PAIR_TYPES = (tuple, list)
DEFAULT_SCAN_LIMIT = 1000
MAX_SCAN_LIMIT = 10_000
SCAN_PAGE = 1000  # rows per read of a whole-table scan
PUT_CHUNK = 5000  # rows per write transaction of a large put_many

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


class RecordStore(BatchWrites):
    """Records of one environment. Obtain through `stores.service.EnvironmentData`."""

    def __init__(self, rt: Runtime, env_id: str) -> None:
        self.rt = rt
        self.env_id = env_id
        self._keys = data_keys(rt)
        self._states = env_states(rt)
        self._sql = record_sql(rt)
        self._hot = self._keys.hot_key
        self._hot_keys: dict[bytes, HotKey] = {}  # DEK id -> the hot key this store last used

    # -- helpers -----------------------------------------------------------------------------
    def _env(self) -> EnvView:
        return self._states.require_usable(self.env_id)

    def _ad(self, env: EnvView, table: str, record_id: str) -> AssociatedData:
        return AssociatedData(env.tenant_id, env.id, STORE, table, record_id)

    def _hooks(self, env: EnvView, table: str, changes: list[tuple[str, Any]]) -> list[Any]:
        return _prepare_hooks(self.rt, env, table, changes)

    def _encrypt_all(
        self, env: EnvView, table: str, items: list[tuple[str, bytes]]
    ) -> list[tuple[str, bytes, str]]:
        """Encrypt (id, plaintext) pairs under the primary DEK; roll to a new DEK when it runs out.
        Returns (id, blob, DEK id in hex) triples."""
        out: list[tuple[str, bytes, str]] = []
        prefix = ad_prefix(env.tenant_id, env.id, STORE, table)
        append = out.append
        while len(out) < len(items):
            cipher: RecordCipher = self._keys.cipher(self.rt, env, STORE)
            dek_id = cipher.keyring.primary.id
            dek_hex, encrypt = dek_id.hex(), cipher.encrypt_record
            nbytes = 0
            try:
                for rid, plain in items[len(out) :]:
                    append((rid, encrypt(plain, prefix, rid), dek_hex))
                    nbytes += len(plain)
            except DataKeyExhaustedError:
                self._keys.roll(self.rt, env, STORE, dek_id)
            finally:
                self._keys.note_use(env.id, dek_id, nbytes)
        return out

    def _decrypt(self, env: EnvView, table: str, record_id: str, blob: bytes) -> Any:
        """Authenticate and decode one stored value."""
        return self._open(env, table, [(record_id, blob)])[0]

    def _open(self, env: EnvView, table: str, rows: Iterable[Sequence[Any]]) -> list[Any]:
        """Authenticate and decode stored values (the read hot path; names bound once per call).

        `rows` hold the record id at [0] and the stored blob at [1] (other columns are ignored, so
        a scan's rows are passed as fetched). Per row: the DEK's hot key (renewed through
        `DataKeys.hot_key` when spent, expired or flushed), the table's encoded AD with the id
        appended, AES-GCM, the value decoding.
        """
        prefix = ad_prefix(env.tenant_id, env.id, STORE, table)
        hot_keys, monotonic = self._hot_keys, self._keys.monotonic
        json_tag, from_json = TAG_JSON, decode_json
        out: list[Any] = []
        append = out.append
        for row in rows:
            rid, blob = row[0], row[1]
            try:
                if type(blob) is not bytes:
                    blob = bytes(blob)
                if len(blob) < RECORD_OVERHEAD:
                    raise IntegrityError("ciphertext is malformed")
                dek_id = blob[4:20]
                hot = hot_keys.get(dek_id)
                if (
                    hot is None
                    or not hot.live
                    or monotonic() >= hot.deadline
                    or next(hot.tickets) >= hot.allowance
                ):
                    hot = hot_keys[dek_id] = self._hot(self.rt, env, STORE, dek_id)
                plain = hot.cipher.decrypt_record(blob, prefix, rid)
                hot.sizes.append(len(plain))
                if plain[:1] == json_tag:  # decode_value's common case, inlined
                    append(from_json(plain[1:].decode("utf-8")))
                else:
                    append(decode_value(plain))
            except IntegrityError:
                raise IntegrityError(
                    f"record {table}/{rid} of environment {env.name!r} failed authentication "
                    "(stored ciphertext is corrupt or was moved)"
                ) from None
            except ValueError:  # JSON decode of an authenticated plaintext: should not happen
                raise IntegrityError(f"record {table}/{rid} holds an undecodable value") from None
        return out

    def _records(self, env: EnvView, table: str, rows: list[Any]) -> list[Record]:
        """Record objects of (id, blob, version, updated_at) rows."""
        values = self._open(env, table, rows)
        read_at = self._sql.read_at_fn
        return [make_record(r[0], v, r[2], read_at(r[3])) for r, v in zip(rows, values, strict=True)]

    def _table_exists(self, table: str) -> bool:
        sql = self._sql
        return bool(sql.fetch(sql.any_row, (self.env_id, table)))

    def _not_found(self, table: str, record_id: str) -> KeyshiftError:
        if not self._table_exists(table):
            return NotFoundError(f"table {table!r} not found", code="table_not_found")
        return NotFoundError(f"record {table}/{record_id} not found", code="record_not_found")

    # -- writes ------------------------------------------------------------------------------
    def put(self, table: str, record_id: str, value: Any, *, expected_version: int | None = None) -> int:
        """Write a record; returns its new version. With expected_version: compare-and-swap."""
        validate_table(table)
        validate_id(record_id)
        if expected_version is not None:
            validate_version(expected_version)
        plain = encode_value(value)
        env = self._env()
        [(_, blob, dek_hex)] = self._encrypt_all(env, table, [(record_id, plain)])
        hooks = self._hooks(env, table, [(record_id, value)])
        sql = self._sql
        row = (env.id, table, record_id, dek_hex, blob, sql.bind_at(self.rt.clock.now()))

        def work(conn: Any) -> int:
            if expected_version is None:
                return int(conn.execute(sql.upsert_returning, row).fetchone()[0])
            if expected_version == 0:
                if conn.execute(sql.insert_new, row).fetchone() is None:
                    raise ConflictError(
                        f"record {table}/{record_id} already exists (expected it absent)",
                        code="version_conflict",
                    )
                return 1
            cur = conn.execute(sql.cas, (blob, row[3], row[5], env.id, table, record_id, expected_version))
            if cur.rowcount != 1:
                raise ConflictError(
                    f"record {table}/{record_id} is not at version {expected_version}",
                    code="version_conflict",
                )
            return expected_version + 1

        return sql.write(work, hooks, self.rt)

    def put_many(self, table: str, items: Iterable[tuple[str, Any]]) -> int:
        """Write many records of one table; returns the count written.

        Up to PUT_CHUNK items: one transaction (one executemany), all or nothing. More: streamed
        in chunks of PUT_CHUNK, each its own transaction, so memory stays flat whatever the size.
        A list or tuple is checked whole first (ids, pairs, values), so bad input writes nothing;
        from any other iterable, chunks before a bad item stay written. A repeated id: the last
        value wins.
        """
        validate_table(table)
        if isinstance(items, list | tuple) and len(items) > PUT_CHUNK:
            for item in items:  # check everything before writing anything
                self._pair(item)
        it = iter(items)
        written = 0
        while True:
            plain: dict[str, bytes] = {}
            values: dict[str, Any] = {}
            for item in islice(it, PUT_CHUNK):
                rid, value, data = self._pair(item)
                plain[rid] = data
                values[rid] = value
            if not plain:
                return written
            env = self._env()
            blobs = self._encrypt_all(env, table, list(plain.items()))
            del plain
            now = self._sql.bind_at(self.rt.clock.now())
            env_id = env.id
            rows = [(env_id, table, rid, dek_hex, blob, now) for rid, blob, dek_hex in blobs]
            del blobs
            hooks = self._hooks(env, table, list(values.items()))
            del values
            self._sql.write(partial(executemany, sql=self._sql.upsert, rows=rows), hooks, self.rt)
            written += len(rows)

    @staticmethod
    def _pair(item: object) -> tuple[str, Any, bytes]:
        if not isinstance(item, _PAIR_TYPES) or len(item) != 2:
            raise UsageError("put_many takes (id, value) pairs", code="invalid_value")
        rid, value = item
        return validate_id(rid), value, encode_value(value)

    def delete(self, table: str, record_id: str, *, expected_version: int | None = None) -> None:
        validate_table(table)
        validate_id(record_id)
        if expected_version is not None:
            validate_version(expected_version)
        env = self._env()
        hooks = self._hooks(env, table, [(record_id, None)])
        sql = self._sql
        key = (env.id, table, record_id)

        def work(conn: Any) -> bool:
            if expected_version is None:
                cur = conn.execute(sql.delete, key)
            else:
                cur = conn.execute(sql.delete_at, (*key, expected_version))
            if cur.rowcount != 1:
                raise _NothingDeleted  # roll back: the write hooks must not run
            return True

        try:
            sql.write(work, hooks, self.rt)
        except _NothingDeleted:
            if expected_version is not None and self._exists(table, record_id):
                raise ConflictError(
                    f"record {table}/{record_id} is not at version {expected_version}",
                    code="version_conflict",
                ) from None
            raise self._not_found(table, record_id) from None

    def _exists(self, table: str, record_id: str) -> bool:
        sql = self._sql
        return bool(sql.fetch(sql.version_of, (self.env_id, table, record_id)))

    # -- reads -------------------------------------------------------------------------------
    def get_record(self, table: str, record_id: str) -> Record:
        validate_table(table)
        validate_id(record_id)
        env = self._env()
        sql = self._sql
        rows = sql.fetch(sql.get_row, (env.id, table, record_id))
        if not rows:
            raise self._not_found(table, record_id)
        blob, version, at = rows[0]
        return Record(record_id, self._decrypt(env, table, record_id, blob), version, sql.read_at(at))

    def get(self, table: str, record_id: str) -> Any:
        """A record's value: one point read (no version or time decoded)."""
        validate_table(table)
        validate_id(record_id)
        env = self._env()
        sql = self._sql
        rows = sql.fetch(sql.get_value, (env.id, table, record_id))
        if not rows:
            raise self._not_found(table, record_id)
        return self._decrypt(env, table, record_id, rows[0][0])

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
        sql = self._sql

        def work(conn: Any) -> list[Any]:
            rows: list[Any] = []
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i : i + _IN_CHUNK]
                rows += conn.execute(sql.get_many_sql(len(chunk)), (env.id, table, *chunk)).fetchall()
            return rows

        if len(wanted) > _IN_CHUNK:
            rows = sql.db.read(work)
        else:
            rows = sql.fetch(sql.get_many_sql(len(wanted)), (env.id, table, *wanted))
        rows.sort(key=lambda r: r[0])
        return self._records(env, table, rows)

    @overload
    def scan(self, table: str, after: str | None = None, limit: None = None) -> Iterator[Record]: ...

    @overload
    def scan(self, table: str, after: str | None = None, *, limit: int) -> list[Record]: ...

    @overload
    def scan(self, table: str, after: str | None, limit: int) -> list[Record]: ...

    def scan(
        self, table: str, after: str | None = None, limit: int | None = None
    ) -> Iterator[Record] | list[Record]:
        """Records of a table in id order, starting after `after`.

        Without `limit`: an iterator over the whole table, read page by page (SCAN_PAGE rows at a
        time: constant memory). Its first page is read at once, so an unknown table or an
        unusable environment raises here, not at the first `next()`.
        With `limit` (1 to MAX_SCAN_LIMIT): one page, as a list (explicit paging: pass the last
        id as `after` for the next page).
        """
        validate_table(table)
        if after is not None:
            validate_id(after)
        if limit is None:
            first = self._page(table, after, SCAN_PAGE)
            return self._pages(table, first)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SCAN_LIMIT:
            raise UsageError(f"limit must be between 1 and {MAX_SCAN_LIMIT}", code="invalid_limit")
        return self._page(table, after, limit)

    def _page(self, table: str, after: str | None, limit: int) -> list[Record]:
        env = self._env()
        sql = self._sql
        if after is None:
            rows = sql.fetch(sql.scan_first, (env.id, table, limit))
        else:
            rows = sql.fetch(sql.scan_after, (env.id, table, after, limit))
        if not rows and after is None:
            raise NotFoundError(f"table {table!r} not found", code="table_not_found")
        return self._records(env, table, rows)

    def _pages(self, table: str, page: list[Record]) -> Iterator[Record]:
        while True:
            yield from page
            if len(page) < SCAN_PAGE:
                return
            page = self._page(table, page[-1].id, SCAN_PAGE)

    def iter_all(self, table: str, page: int = DEFAULT_SCAN_LIMIT) -> Iterable[Record]:
        """Every record of a table, page by page (nothing if the table does not exist)."""
        validate_table(table)
        after: str | None = None
        while True:
            try:
                batch = self._page(table, after, page)
            except NotFoundError:
                return
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].id

    def tables(self) -> list[dict[str, Any]]:
        self._env()
        with read_transaction(self.rt.sessions) as s:
            rows = s.execute(
                select(_T.c.table_name, func.count())
                .where(_T.c.environment_id == self.env_id)
                .group_by(_T.c.table_name)
                .order_by(_T.c.table_name)
            ).all()
        return [{"table": t, "records": n} for t, n in rows]


class _NothingDeleted(Exception):
    """A delete matched no row (rolls its transaction back)."""


__all__ = [
    "MAX_VALUE_BYTES",
    "Record",
    "RecordStore",
    "TableAd",
    "decode_value",
    "encode_value",
    "validate_id",
    "validate_table",
    "validate_version",
]
