"""The record store's SQL, written once per database and run on plain DBAPI connections.

One `RecordSql` per runtime (a runtime extension): the statements in the driver's paramstyle, the
`updated_at` converters of the column type (so rows read and written here are exactly what the
ORM reads and writes), and a `DirectDB` for autocommit reads and explicit write transactions.
A write that must commit together with ORM work (a derived index's write hook) runs the same
statements on the DBAPI connection under a Session's transaction instead (`in_session`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from keyshift.db.direct import DirectDB
from keyshift.db.models import DataRecord
from keyshift.runtime import Runtime

EXTENSION = "keyshift.stores.records_sql"
MAX_BATCH = 10_000  # ids per get_many / put_many_if_versions call
_IN_CHUNK = 500  # ids per SQL IN list
T = TypeVar("T")

_T = cast(Table, DataRecord.__table__)
_KEY = "environment_id = ? AND table_name = ?"
_COLS = "environment_id, table_name, record_id, version, dek_id, value, updated_at"


class RecordSql:
    """Statements and connections of the record store for one runtime's database."""

    def __init__(self, rt: Runtime) -> None:
        self.db = DirectDB(rt.engine)
        dialect = rt.engine.dialect
        at_type = _T.c.updated_at.type  # the column's own converters, as the ORM applies them
        self._bind_at = at_type._cached_bind_processor(dialect)
        self._read_at: Callable[[Any], Any] | None = at_type._cached_result_processor(dialect, None)
        if dialect.name == "sqlite":  # the same result, parsed by the C ISO parser
            self._read_at = _sqlite_at
        elif self.db.postgres:  # psycopg returns aware datetimes: only normalise the zone
            self._read_at = _aware_at
        q = self.db.sql
        self.get_value = q(f"SELECT value FROM data_records WHERE {_KEY} AND record_id = ?")
        self.get_row = q(
            f"SELECT value, version, updated_at FROM data_records WHERE {_KEY} AND record_id = ?"
        )
        self.version_of = q(f"SELECT version FROM data_records WHERE {_KEY} AND record_id = ?")
        self.any_row = q(f"SELECT 1 FROM data_records WHERE {_KEY} LIMIT 1")
        cols = "record_id, value, version, updated_at"
        self.scan_first = q(f"SELECT {cols} FROM data_records WHERE {_KEY} ORDER BY record_id LIMIT ?")
        self.scan_after = q(
            f"SELECT {cols} FROM data_records WHERE {_KEY} AND record_id > ? ORDER BY record_id LIMIT ?"
        )
        values = "(?, ?, ?, 1, ?, ?, ?)"
        conflict = "ON CONFLICT (environment_id, table_name, record_id)"
        self.upsert = q(
            f"INSERT INTO data_records ({_COLS}) VALUES {values} {conflict} DO UPDATE SET "
            "value = excluded.value, dek_id = excluded.dek_id, updated_at = excluded.updated_at, "
            "version = data_records.version + 1"
        )
        self.upsert_returning = self.upsert + " RETURNING version"
        self.insert_new = q(
            f"INSERT INTO data_records ({_COLS}) VALUES {values} {conflict} DO NOTHING RETURNING version"
        )
        self.cas = q(
            "UPDATE data_records SET value = ?, dek_id = ?, updated_at = ?, version = version + 1 "
            f"WHERE {_KEY} AND record_id = ? AND version = ?"
        )
        self.delete = q(f"DELETE FROM data_records WHERE {_KEY} AND record_id = ?")
        self.delete_at = q(f"DELETE FROM data_records WHERE {_KEY} AND record_id = ? AND version = ?")
        self._in: dict[int, str] = {}
        self._lock: dict[int, str] = {}

    def get_many_sql(self, count: int) -> str:
        """SELECT of `count` ids (statements cached per count)."""
        sql = self._in.get(count)
        if sql is None:
            marks = ", ".join("?" * count)
            sql = self.db.sql(
                "SELECT record_id, value, version, updated_at FROM data_records "
                f"WHERE {_KEY} AND record_id IN ({marks})"
            )
            if len(self._in) < 64:
                self._in[count] = sql
        return sql

    def lock_versions_sql(self, count: int) -> str:
        """(id, version) of `count` ids in id order, locked for update on PostgreSQL (SQLite's write
        transaction holds the database lock already)."""
        sql = self._lock.get(count)
        if sql is None:
            marks = ", ".join("?" * count)
            sql = self.db.sql(
                "SELECT record_id, version FROM data_records "
                f"WHERE {_KEY} AND record_id IN ({marks}) ORDER BY record_id"
            ) + (" FOR UPDATE" if self.db.postgres else "")
            if len(self._lock) < 64:
                self._lock[count] = sql
        return sql

    def bind_at(self, at: datetime) -> Any:
        return self._bind_at(at) if self._bind_at is not None else at

    def read_at(self, raw: Any) -> datetime:
        return cast(datetime, self._read_at(raw) if self._read_at is not None else raw)

    @property
    def read_at_fn(self) -> Callable[[Any], datetime]:
        """`read_at` as one plain function (bulk reads call it per row)."""
        return self._read_at if self._read_at is not None else _same

    # -- running -------------------------------------------------------------------------------
    def fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self.db.fetch(sql, params)

    def write(self, work: Callable[[Any], T], hooks: list[Any], rt: Runtime) -> T:
        """Run `work(dbapi_conn)` in one write transaction. With write hooks, in an ORM session
        (the hooks run after `work`, in the same transaction); else on a direct connection."""
        if not hooks:
            return self.db.write(work)
        with rt.transaction() as s:
            result = work(in_session(s))
            for fn in hooks:
                fn(s)
            return result

    def close(self) -> None:
        self.db.close()


def _same(raw: Any) -> Any:
    return raw


def _sqlite_at(raw: Any) -> datetime | None:
    """SQLite keeps UTC times as naive ISO text ('YYYY-MM-DD HH:MM:SS[.ffffff]')."""
    if raw is None:
        return None
    at = datetime.fromisoformat(raw)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _aware_at(raw: Any) -> datetime | None:
    if raw is None or raw.tzinfo is UTC:
        return raw  # type: ignore[no-any-return]
    return raw.astimezone(UTC) if raw.tzinfo is not None else raw.replace(tzinfo=UTC)  # type: ignore[no-any-return]


def in_session(s: Session) -> Any:
    """The DBAPI connection under a session's transaction (begun: on SQLite the write lock)."""
    return s.connection().connection.dbapi_connection


def executemany(conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    cur = conn.cursor()
    try:
        cur.executemany(sql, rows)
        return int(cur.rowcount)
    finally:
        cur.close()


def record_sql(rt: Runtime) -> RecordSql:
    return rt.extension(EXTENSION, RecordSql)  # type: ignore[no-any-return]
