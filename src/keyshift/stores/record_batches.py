"""Record rows in key ranges, for bulk jobs (re-encryption): read a range, write many with CAS.

Every query here is shaped so that the primary key (environment_id, table_name, record_id) serves
it whatever the planner statistics say: a range read is an equality on the first two key columns,
a bound on the third, `ORDER BY` the whole key and a `LIMIT` — an index range scan reading about
`limit` entries. No `IN (...)` list and no filter on a non-key column sits in the WHERE clause: with
statistics absent (autovacuum off, right after a bulk import) those can send the planner to a scan
of the whole environment per call, quadratic over a job.

The compare-and-swap write of a chunk carries the chunk's key range too, so PostgreSQL reads the
rows with an index range scan and joins them to the new values by hashing (never a loop per row).
Values stay ciphertext here; callers decrypt and encrypt outside any transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from keyshift.db.models import DataRecord
from keyshift.errors import ConflictError
from keyshift.runtime import Runtime

_T: Table = DataRecord.__table__  # type: ignore[assignment]
DEADLOCK_RETRIES = 5

# PostgreSQL: one statement compares-and-swaps a whole chunk (rows joined from arrays by key).
_PG_CAS = text(
    """
    UPDATE data_records AS d
       SET value = v.value, dek_id = v.dek_id, version = d.version + 1, updated_at = :at
      FROM unnest(CAST(:ids AS varchar[]), CAST(:versions AS bigint[]),
                  CAST(:blobs AS bytea[]), CAST(:deks AS varchar[]))
           AS v(record_id, version, value, dek_id)
     WHERE d.environment_id = :env AND d.table_name = :tbl
       AND d.record_id >= :lo AND d.record_id <= :hi
       AND d.record_id = v.record_id AND d.version = v.version
    RETURNING d.record_id
    """
)
# For the write transaction only:
# * enable_nestloop off: without statistics the planner takes the key range for one row and would
#   loop over the arrays once per row of the range (quadratic in the chunk); a hash join of the
#   range with the arrays is linear whatever the statistics.
# * synchronous_commit off: the commit does not wait for the WAL flush. A database crash can lose
#   only the last such commits, in order (WAL is sequential): rows then stay under their old,
#   still readable DEK and the batch, not yet finished (the finish commits synchronously, after),
#   runs again. Nothing is lost or duplicated; the chunk just does not pay an fsync.
_PG_SETTINGS = text(
    "SELECT set_config('enable_nestloop', 'off', true), set_config('synchronous_commit', 'off', true)"
)
# Lock the chunk's rows in key order before the UPDATE: every bulk writer takes them in one order.
_PG_LOCK = text(
    """
    SELECT record_id FROM data_records
     WHERE environment_id = :env AND table_name = :tbl AND record_id >= :lo AND record_id <= :hi
     ORDER BY environment_id, table_name, record_id
       FOR UPDATE
    """
)


@dataclass(frozen=True, slots=True)
class RowBlob:
    record_id: str
    version: int
    dek_id: str
    value: bytes


def range_query(
    env_id: str, table: str, after: str | None, upper: str | None, limit: int, *, first: str | None = None
) -> tuple[str, list[Any]]:
    """The statement (`?` placeholders) and parameters reading rows of one table with
    after < record_id <= upper (either end open; or first <= record_id), in key order: an index
    range scan of the primary key whatever the planner statistics."""
    where, params = ["environment_id = ? AND table_name = ?"], [env_id, table]
    if after is not None:
        where.append("record_id > ?")
        params.append(after)
    elif first is not None:
        where.append("record_id >= ?")
        params.append(first)
    if upper is not None:
        where.append("record_id <= ?")
        params.append(upper)
    sql = (
        "SELECT record_id, version, dek_id, value FROM data_records WHERE "
        + " AND ".join(where)
        + " ORDER BY environment_id, table_name, record_id LIMIT ?"
    )
    return sql, [*params, limit]


def read_range(
    rt: Runtime,
    env_id: str,
    table: str,
    after: str | None,
    upper: str | None,
    limit: int,
    *,
    first: str | None = None,
) -> list[RowBlob]:
    """One read statement on the record store's direct connection (SQLite: never the write lock;
    PostgreSQL: one round trip): at most `limit` rows of the range, in key order."""
    from keyshift.stores.records_sql import record_sql

    sql = record_sql(rt)
    stmt, params = range_query(env_id, table, after, upper, limit, first=first)
    return [
        RowBlob(rid, int(ver), dek, bytes(blob))
        for rid, ver, dek, blob in sql.fetch(sql.db.sql(stmt), params)
    ]


def read_ids(rt: Runtime, env_id: str, table: str, ids: Sequence[str]) -> list[RowBlob]:
    """Rows by id (point lookups on the key, one read transaction), in id order; absent ids skipped."""
    stmt = select(_T.c.record_id, _T.c.version, _T.c.dek_id, _T.c.value).where(
        _T.c.environment_id == env_id, _T.c.table_name == table, _T.c.record_id == bindparam("rid")
    )
    out: list[RowBlob] = []
    with rt.transaction() as s:
        for rid in sorted(set(ids)):
            row = s.execute(stmt, {"rid": rid}).first()
            if row is not None:
                out.append(RowBlob(row[0], int(row[1]), row[2], bytes(row[3])))
    return out


def table_names(s: Session, env_id: str) -> list[str]:
    """The environment's tables, one key-ordered index probe per table (no scan of the rows)."""
    out: list[str] = []
    while True:
        stmt = (
            select(_T.c.table_name)
            .where(_T.c.environment_id == env_id)
            .order_by(_T.c.environment_id, _T.c.table_name)
            .limit(1)
        )
        if out:
            stmt = stmt.where(_T.c.table_name > out[-1])
        name = s.scalars(stmt).first()
        if name is None:
            return out
        out.append(name)


def range_bounds(s: Session, env_id: str, table: str, size: int) -> list[tuple[str | None, str | None, int]]:
    """Split a table into key ranges of `size` rows: [(after, upper, rows)], the last upper None.

    Walks the primary key index `size` entries at a time (one short query per range), in the
    caller's transaction."""
    out: list[tuple[str | None, str | None, int]] = []
    after: str | None = None
    here = (_T.c.environment_id == env_id, _T.c.table_name == table)
    order = (_T.c.environment_id, _T.c.table_name, _T.c.record_id)
    while True:
        stmt = select(_T.c.record_id).where(*here).order_by(*order).offset(size - 1).limit(1)
        if after is not None:
            stmt = stmt.where(_T.c.record_id > after)
        upper = s.scalars(stmt).first()
        if upper is None:
            break
        out.append((after, upper, size))
        after = upper
    tail = select(_T.c.record_id).where(*here).order_by(*order).limit(size)
    if after is not None:
        tail = tail.where(_T.c.record_id > after)
    rest = len(s.scalars(tail).all())
    if rest:
        out.append((after, None, rest))
    return out


def _cas_stmt() -> Any:
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


_CAS = _cas_stmt()


def cas_write(
    rt: Runtime, env_id: str, table: str, items: Sequence[tuple[str, int, bytes]], now: datetime
) -> list[str]:
    """Replace the ciphertext of rows still at their expected version, in ONE write transaction.

    `items` = (record id, expected version, new blob), sorted by id. A row written or deleted
    since it was read keeps what it has (never overwritten, never recreated). Returns the ids
    written. A deadlock with another writer (PostgreSQL aborts one side) is retried.
    """
    if not items:
        return []
    pg = rt.engine.dialect.name == "postgresql"
    if not pg:
        return _sqlite_cas(rt, env_id, table, items, now)
    for attempt in range(DEADLOCK_RETRIES):
        try:
            with rt.transaction() as s:
                if pg:
                    lo, hi = items[0][0], items[-1][0]
                    s.execute(_PG_LOCK, {"env": env_id, "tbl": table, "lo": lo, "hi": hi})
                    s.execute(_PG_SETTINGS)
                    res = s.execute(
                        _PG_CAS,
                        {
                            "env": env_id,
                            "tbl": table,
                            "lo": lo,
                            "hi": hi,
                            "at": now,
                            "ids": [i[0] for i in items],
                            "versions": [i[1] for i in items],
                            "blobs": [i[2] for i in items],
                            "deks": _dek_hexes(items),
                        },
                    )
                    return sorted(r[0] for r in res)
                won: list[str] = []
                for rid, version, blob in items:
                    params = {"b_env": env_id, "b_table": table, "b_id": rid, "b_version": version}
                    params |= {"b_value": blob, "b_dek": blob[4:20].hex(), "b_at": now}
                    if s.execute(_CAS, params).rowcount == 1:  # type: ignore[attr-defined]
                        won.append(rid)
                return won
        except DBAPIError as exc:
            if not _is_deadlock(exc) or attempt == DEADLOCK_RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise ConflictError("record rows stayed locked by other writers; retry", code="busy")


def _sqlite_cas(
    rt: Runtime, env_id: str, table: str, items: Sequence[tuple[str, int, bytes]], now: datetime
) -> list[str]:
    """SQLite: the same compare-and-swap on a direct connection (the record store's statement),
    so the database-wide write lock is held for the statements alone, not an ORM session."""
    from keyshift.stores.records_sql import record_sql

    sql = record_sql(rt)
    at = sql.bind_at(now)
    deks = _dek_hexes(items)

    def work(conn: Any) -> list[str]:
        won: list[str] = []
        for (rid, version, blob), dek in zip(items, deks, strict=True):
            if conn.execute(sql.cas, (blob, dek, at, env_id, table, rid, version)).rowcount == 1:
                won.append(rid)
        return won

    return sql.db.write(work)


def _dek_hexes(items: Sequence[tuple[str, int, bytes]]) -> list[str]:
    """The DEK id column of each new blob (its header's DEK id, in hex; few distinct per chunk)."""
    seen: dict[bytes, str] = {}
    out = []
    for _rid, _ver, blob in items:
        raw = blob[4:20]
        text_ = seen.get(raw)
        if text_ is None:
            text_ = seen[raw] = raw.hex()
        out.append(text_)
    return out


def _is_deadlock(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40P01", "40001")
