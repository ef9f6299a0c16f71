"""Compare-and-swap of many records of one table in one write transaction (`put_many_if_versions`),
the re-encrypting migration's batch write. A mixin of `RecordStore` (stores/records.py), which
provides `_env`, `_hooks`, `_encrypt_all` and `_sql`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from keyshift.errors import IntegrityError, UsageError
from keyshift.stores.envstate import EnvView
from keyshift.stores.record_codec import encode_value, validate_id, validate_table, validate_version
from keyshift.stores.records_sql import _IN_CHUNK, MAX_BATCH, RecordSql, executemany


class BatchWrites:
    """`put_many_if_versions` for `RecordStore`."""

    _sql: RecordSql
    rt: Any

    def _env(self) -> EnvView:
        raise NotImplementedError

    def _hooks(self, env: EnvView, table: str, changes: list[tuple[str, Any]]) -> list[Any]:
        raise NotImplementedError

    def _encrypt_all(
        self, env: EnvView, table: str, items: list[tuple[str, bytes]]
    ) -> list[tuple[str, bytes, str]]:
        raise NotImplementedError

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
            validate_version(version, minimum=1)
            if rid in entries:
                raise UsageError(f"record id {rid!r} appears twice in one batch", code="invalid_value")
            entries[rid] = (encode_value(value), value, version)
        if len(entries) > MAX_BATCH:
            raise UsageError(f"at most {MAX_BATCH} records per batch", code="invalid_value")
        if not entries:
            return []
        env = self._env()
        ids = sorted(entries)  # one lock order for every batch writer
        sealed = self._encrypt_all(env, table, [(rid, entries[rid][0]) for rid in ids])
        sql = self._sql
        at = sql.bind_at(self.rt.clock.now())
        params = {
            rid: (blob, dek_hex, at, env.id, table, rid, entries[rid][2]) for rid, blob, dek_hex in sealed
        }
        del sealed
        pending = ids
        while pending:
            hooks = self._hooks(env, table, [(rid, entries[rid][1]) for rid in pending])
            try:
                work = partial(self._cas_batch, env.id, table, pending, params, bool(hooks))
                return sql.write(work, hooks, self.rt)
            except _LostRace as lost:
                pending = lost.won  # prepare the hooks again for the winners only
        return []

    def _cas_batch(
        self,
        env_id: str,
        table: str,
        pending: list[str],
        params: dict[str, tuple[Any, ...]],
        hooked: bool,
        conn: Any,
    ) -> list[str]:
        """In the write transaction: lock the rows (PostgreSQL FOR UPDATE; SQLite's write
        transaction holds the lock), keep those still at their expected version, update them in
        one executemany."""
        sql = self._sql
        if len(pending) == 1:  # one row: the version-checked UPDATE alone (shortest lock)
            if conn.execute(sql.cas, params[pending[0]]).rowcount == 1:
                return pending
            if hooked:
                raise _LostRace([])  # the hooks must not run for a row not written
            return []
        current: dict[str, int] = {}
        for i in range(0, len(pending), _IN_CHUNK):
            chunk = pending[i : i + _IN_CHUNK]
            locked = conn.execute(sql.lock_versions_sql(len(chunk)), (env_id, table, *chunk))
            current.update(locked.fetchall())
        won = [rid for rid in pending if current.get(rid) == params[rid][6]]
        if hooked and len(won) != len(pending):
            raise _LostRace(won)  # roll back; the hooks were prepared for rows that lost
        if won and executemany(conn, sql.cas, [params[rid] for rid in won]) != len(won):
            raise IntegrityError("record versions changed under a row lock")
        return won


class _LostRace(Exception):
    """Some rows of a hooked batch lost the race: roll back, prepare the hooks for the winners."""

    def __init__(self, won: list[str]) -> None:
        super().__init__("rows lost the race")
        self.won = won
