"""Data plane vs the raw driver doing the same work, on SQLite and PostgreSQL, A/B interleaved.

Baseline ("raw"): the bare driver (sqlite3 in autocommit under WAL with Keyshift's pragmas;
psycopg 3 in autocommit, statements auto-prepared) + pyca AESGCM, doing what Keyshift does: the
same `data_records` table and primary key, the same blob layout (32-byte header, header + per-record
associated data of tenant, environment, store, table and id), the same tagged compact JSON, the
same upsert. Second baseline: plaintext rows through SQLAlchemy Core and Keyshift's transaction
helper (the bench's former baseline, "in-path plaintext").

* get: random single-record reads of a 10,000-row table (values ~200 B JSON).
* scan: the whole 10,000-row table in id order (pages of 1,000; rows decoded with their time).
* put_many: 10,000 rows in batches of 1,000, each round into a fresh table.
Each case runs 7 rounds (BENCH_ROUNDS, at least 5); in each round every candidate runs once, order
rotated. The ratio is the median of the per-round ratios (Keyshift ÷ raw), the spread their
min-max. The note adds the same ratio over this process's CPU time (`time.process_time`): on a
loaded machine the wall-time ratio mostly measures who waited for a core; the CPU ratio is what
each side's client work costs (on PostgreSQL the server's share is left out of it).
* put_many memory: tracemalloc peak of one `put_many` of BENCH_BIG_PUT_MANY (default 250,000; 0 skips)
  generated items (SQLite).
* files (directory file storage): a 256 MiB file put/get vs a plain file copy (skip with
  BENCH_SKIP_FILES=1).

Set KEYSHIFT_BENCH_PG to a PostgreSQL URL (default: the test server at 127.0.0.1:5432/test); a
throwaway schema is created and dropped. On a shared machine the rates move; the per-round ratios
are what to read.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import sqlite3
import struct
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Report, Section, ab_rounds, best_seconds, median, ratio_stats, timed_rounds

ROWS = int(os.environ.get("BENCH_ROWS", "10000"))
BATCH = 1_000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))  # >= 5; 7 lets the median ride out two stalls
FILE_BYTES = 256 << 20
COPY_BUF = 1 << 20
FILE_ROUNDS = 4
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_U32 = struct.Struct(">I")


def _value(i: int) -> dict[str, Any]:
    return {
        "name": f"Customer {i:06d}",
        "email": f"customer{i:06d}@example.com",
        "tier": ["gold", "silver", "bronze"][i % 3],
        "balance": i * 3.25,
        "tags": ["a", "b", "c"],
        "notes": "x" * 60,
    }


def _setup(home: Path, url: str | None) -> tuple[Any, Any]:
    from keyshift.bootstrap import init_home
    from keyshift.control.environments import create_environment
    from keyshift.control.tenants import create_tenant
    from keyshift.runtime import Runtime
    from keyshift.stores.service import EnvironmentData

    init_home(home, database_url=url)
    rt = Runtime.open(home=home, database_url=url, principal="operator:bench")
    create_tenant(rt, "bench")
    create_environment(rt, "bench", "bench-prod", env_type="production")
    return rt, EnvironmentData(rt, "bench-prod")


def _field(text: str) -> bytes:
    raw = text.encode()
    return _U32.pack(len(raw)) + raw


class Raw:
    """The bare driver + pyca AESGCM doing the record store's work."""

    def __init__(self, rt: Any, env: Any, pg_conninfo: tuple[str, str] | None) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        from keyshift.stores.envstate import env_states

        view = env_states(rt).get(env.id)
        self.env_id, self.tenant_id = view.id, view.tenant_id
        self.aead = AESGCM(AESGCM.generate_key(256))
        self.dek_id = os.urandom(16)
        self.lead = b"KS\x01\x01" + self.dek_id
        self.pg = pg_conninfo is not None
        if pg_conninfo is not None:
            import psycopg

            self.conn: Any = psycopg.connect(pg_conninfo[0], options=pg_conninfo[1], autocommit=True)
            q = "%s"
        else:
            self.conn = sqlite3.connect(rt.engine.url.database, isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
                self.conn.execute(f"PRAGMA {pragma}")
            q = "?"
        key = f"environment_id = {q} AND table_name = {q}"
        self.get_sql = f"SELECT value FROM data_records WHERE {key} AND record_id = {q}"
        cols = "record_id, value, version, updated_at"
        self.first_sql = f"SELECT {cols} FROM data_records WHERE {key} ORDER BY record_id LIMIT {q}"
        self.after_sql = (
            f"SELECT {cols} FROM data_records WHERE {key} AND record_id > {q} ORDER BY record_id LIMIT {q}"
        )
        self.upsert_sql = (
            "INSERT INTO data_records (environment_id, table_name, record_id, version, dek_id, value, "
            f"updated_at) VALUES ({q}, {q}, {q}, 1, {q}, {q}, {q}) "
            "ON CONFLICT (environment_id, table_name, record_id) DO UPDATE SET value = excluded.value, "
            "dek_id = excluded.dek_id, updated_at = excluded.updated_at, version = data_records.version + 1"
        )
        self._ad: dict[str, bytes] = {}

    def ad_prefix(self, table: str) -> bytes:
        prefix = self._ad.get(table)
        if prefix is None:
            prefix = b"".join(_field(f) for f in (self.tenant_id, self.env_id, "records", table))
            self._ad[table] = prefix
        return prefix

    def _open(self, table: str, rid: str, blob: bytes) -> Any:
        header = blob[:32]
        raw = rid.encode()
        ad = header + self.ad_prefix(table) + _U32.pack(len(raw)) + raw
        pt = self.aead.decrypt(header[20:], blob[32:], ad)
        return json.loads(pt[1:])

    def get(self, table: str, rid: str) -> Any:
        row = self.conn.execute(self.get_sql, (self.env_id, table, rid)).fetchone()
        return self._open(table, rid, row[0])

    def scan(self, table: str) -> int:
        count, after = 0, None
        while True:
            if after is None:
                rows = self.conn.execute(self.first_sql, (self.env_id, table, BATCH)).fetchall()
            else:
                rows = self.conn.execute(self.after_sql, (self.env_id, table, after, BATCH)).fetchall()
            out = []
            for rid, blob, version, at in rows:
                if not self.pg:
                    at = datetime.fromisoformat(at).replace(tzinfo=UTC)
                out.append((rid, self._open(table, rid, blob), version, at))
            count += len(out)
            if len(rows) < BATCH:
                return count
            after = rows[-1][0]

    def put_many(self, table: str, items: list[tuple[str, Any]]) -> None:
        now: Any = datetime.now(UTC)
        if not self.pg:
            now = now.replace(tzinfo=None).isoformat(sep=" ")
        prefix, dek_hex = self.ad_prefix(table), self.dek_id.hex()
        rows = []
        for rid, value in items:
            pt = b"J" + json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
            nonce = os.urandom(12)
            header = self.lead + nonce
            raw = rid.encode()
            ct = self.aead.encrypt(nonce, pt, header + prefix + _U32.pack(len(raw)) + raw)
            rows.append((self.env_id, table, rid, dek_hex, header + ct, now))
        if self.pg:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(self.upsert_sql, rows)
        else:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(self.upsert_sql, rows)
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class InPath:
    """Plaintext rows through SQLAlchemy Core and Keyshift's transaction helper (former baseline)."""

    def __init__(self, rt: Any, env: Any) -> None:
        from keyshift.db.models import DataRecord
        from keyshift.stores.records import _upsert

        self.rt, self.env_id = rt, env.id
        self.t = DataRecord.__table__
        self.upsert = _upsert(rt.engine.dialect.name)

    def put_many(self, table: str, items: list[tuple[str, Any]]) -> None:
        from keyshift.stores.records import encode_value

        now = self.rt.clock.now()
        rows = [
            {
                "environment_id": self.env_id,
                "table_name": table,
                "record_id": rid,
                "version": 1,
                "dek_id": "",
                "value": encode_value(v),
                "updated_at": now,
            }
            for rid, v in items
        ]
        with self.rt.transaction() as s:
            s.execute(self.upsert, rows)

    def get(self, table: str, rid: str) -> Any:
        from sqlalchemy import select

        t = self.t
        with self.rt.transaction() as s:
            blob = s.execute(
                select(t.c.value).where(
                    t.c.environment_id == self.env_id, t.c.table_name == table, t.c.record_id == rid
                )
            ).scalar_one()
        return json.loads(blob[1:])

    def scan(self, table: str) -> int:
        from sqlalchemy import select

        t = self.t
        count, after = 0, None
        while True:
            stmt = (
                select(t.c.record_id, t.c.value, t.c.version, t.c.updated_at)
                .where(t.c.environment_id == self.env_id, t.c.table_name == table)
                .order_by(t.c.record_id)
                .limit(BATCH)
            )
            if after is not None:
                stmt = stmt.where(t.c.record_id > after)
            with self.rt.transaction() as s:
                rows = s.execute(stmt).all()
            count += len([(r[0], json.loads(r[1][1:]), r[2], r[3]) for r in rows])
            if len(rows) < BATCH:
                return count
            after = rows[-1][0]


def _records(report: Report, label: str, rt: Any, env: Any, pg: tuple[str, str] | None) -> None:
    section = report.section(
        f"stores: records vs raw driver + AESGCM ({label})",
        f"ratio = Keyshift ÷ raw, median of {ROUNDS} interleaved rounds (spread min-max); "
        f"{ROWS:,} rows of ~200 B JSON; shared machine: read the ratios",
    )
    raw, plain = Raw(rt, env, pg), InPath(rt, env)
    values = [(f"r{i:06d}", _value(i)) for i in range(ROWS)]
    ids = [rid for rid, _ in values]
    try:
        for i in range(0, ROWS, BATCH):  # the tables read by get and scan
            env.records.put_many("ks", values[i : i + BATCH])
            raw.put_many("raw", values[i : i + BATCH])
            plain.put_many("plain", values[i : i + BATCH])
        rng = random.Random(7)
        assert env.records.get("ks", "r000001") == raw.get("raw", "r000001") == plain.get("plain", "r000001")
        cpu: dict[str, list[float]] = {}
        got = ab_rounds(
            {
                "raw": lambda: raw.get("raw", rng.choice(ids)),
                "keyshift": lambda: env.records.get("ks", rng.choice(ids)),
                "plain": lambda: plain.get("plain", rng.choice(ids)),
            },
            rounds=ROUNDS,
            min_time=0.3,
            warmup=50,
            cpu=cpu,
        )
        _rows(section, "point get ops/s", got, "ops/s", cpu)

        assert raw.scan("raw") == ROWS == sum(1 for _ in env.records.scan("ks")) == plain.scan("plain")
        cpu = {}
        secs = timed_rounds(
            {
                "raw": lambda: raw.scan("raw"),
                "keyshift": lambda: sum(1 for _ in env.records.scan("ks")),
                "plain": lambda: plain.scan("plain"),
            },
            rounds=ROUNDS,
            cpu=cpu,
        )
        _rows(section, "scan rows/s", _per_second(secs), "rows/s", _per_second(cpu))

        n = {"raw": 0, "keyshift": 0, "plain": 0}

        def writer(name: str, fn: Callable[[str, list[tuple[str, Any]]], Any]) -> Callable[[], None]:
            def run() -> None:
                n[name] += 1
                table = f"w{name}{n[name]}"
                for i in range(0, ROWS, BATCH):
                    fn(table, values[i : i + BATCH])

            return run

        cpu = {}
        secs = timed_rounds(
            {
                "raw": writer("raw", raw.put_many),
                "keyshift": writer("keyshift", env.records.put_many),
                "plain": writer("plain", plain.put_many),
            },
            rounds=ROUNDS,
            cpu=cpu,
        )
        _rows(section, "put_many rows/s", _per_second(secs), "rows/s", _per_second(cpu))
    finally:
        raw.close()


def _per_second(seconds: dict[str, list[float]]) -> dict[str, list[float]]:
    """Rows per second of each round's seconds for the whole table."""
    return {k: [ROWS / max(s, 1e-9) for s in v] for k, v in seconds.items()}


def _rows(
    section: Section, group: str, rates: dict[str, list[float]], unit: str, cpu: dict[str, list[float]]
) -> None:
    section.add_rounds(group, "raw driver + pyca AESGCM (same work)", rates["raw"], unit=unit)
    mid, lo, hi = ratio_stats(cpu["keyshift"], cpu["raw"])
    section.add_rounds(
        group,
        "Keyshift records",
        rates["keyshift"],
        rates["raw"],
        unit,
        note=f"client CPU ratio {mid:.2f} ({lo:.2f}-{hi:.2f})",
    )
    mid = median([k / p for k, p in zip(rates["keyshift"], rates["plain"], strict=True)])
    section.add_rounds(
        group,
        "plaintext via SQLAlchemy Core (in-path)",
        rates["plain"],
        rates["raw"],
        unit,
        note=f"Keyshift ÷ this = {mid:.2f}x",
    )


def _big_put_many(report: Report, env: Any) -> None:
    count = int(os.environ.get("BENCH_BIG_PUT_MANY", "250000"))
    section = report.section(
        "stores: one put_many of many items (SQLite)",
        "tracemalloc peak of one put_many of a generator (items ~100 B JSON); streamed in chunks",
    )

    def items() -> Iterator[tuple[str, Any]]:
        for i in range(count):
            yield f"m{i:08d}", {"i": i, "name": f"item {i}", "pad": "y" * 48}

    tracemalloc.start()
    try:
        seconds = best_seconds(lambda: env.records.put_many("big", items()), repeat=1, warmup=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rate = f"{count / seconds:,.0f} rows/s under tracemalloc"
    section.add("put_many memory", f"{count:,} items", peak, "B", note=rate)


def _pg_schema() -> tuple[str, tuple[str, str], Callable[[], None]] | str:
    base = os.environ.get("KEYSHIFT_BENCH_PG", PG_DEFAULT)
    try:
        from sqlalchemy import create_engine, text

        admin = create_engine(base, connect_args={"connect_timeout": 3})
        name = f"ks_bench_{secrets.token_hex(4)}"
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    except Exception as exc:
        return f"PostgreSQL at {base} unreachable: {type(exc).__name__}"

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()

    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options=-csearch_path%3D{name}"
    conninfo = base.replace("postgresql+psycopg://", "postgresql://", 1)
    return url, (conninfo, f"-csearch_path={name}"), drop


def _write_source(path: Path) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for i in range(FILE_BYTES >> 20):
            f.write(block[i % 7 :] + block[: i % 7])


def _files(report: Report, env: Any, tmp: Path) -> None:
    section = report.section(
        "stores: files (directory file storage)",
        f"{FILE_BYTES >> 20} MiB file, 1 MiB segments; plain = file-to-file copy through Python "
        "(1 MiB buffers, fsync)",
    )
    src = tmp / "source.bin"
    _write_source(src)
    out = tmp / "out.bin"

    def plain_copy() -> None:
        with src.open("rb") as a, out.open("wb") as b:
            shutil.copyfileobj(a, b, COPY_BUF)
            b.flush()
            os.fsync(b.fileno())

    def put() -> None:
        with src.open("rb") as f:
            env.files.put("bench/big.bin", f)

    def get() -> None:
        with out.open("wb") as f:
            env.files.copy_to("bench/big.bin", f)
            f.flush()
            os.fsync(f.fileno())

    def settled(fn: Any) -> float:
        os.sync()  # start each timed run with no dirty pages of the previous one pending
        return best_seconds(fn, repeat=1, warmup=0)

    best: dict[str, float] = {"plain": float("inf"), "put": float("inf"), "get": float("inf")}
    for _ in range(FILE_ROUNDS):  # interleaved: disk noise on a shared machine hits all three alike
        best["plain"] = min(best["plain"], settled(plain_copy))
        best["put"] = min(best["put"], settled(put))
        best["get"] = min(best["get"], settled(get))
    section.add("put B/s", "plain file copy", FILE_BYTES / best["plain"], "B/s", baseline=True)
    section.add("put B/s", "Keyshift files.put", FILE_BYTES / best["put"], "B/s")
    section.add("get B/s", "plain file copy", FILE_BYTES / best["plain"], "B/s", baseline=True)
    section.add("get B/s", "Keyshift files.open (streamed)", FILE_BYTES / best["get"], "B/s")

    tracemalloc.start()
    try:
        put()
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        get()
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    section.add("peak traced memory", "files.put", put_peak, "B", note=f"for a {FILE_BYTES >> 20} MiB file")
    section.add("peak traced memory", "files.get", get_peak, "B", note=f"for a {FILE_BYTES >> 20} MiB file")
    src.unlink(missing_ok=True)
    out.unlink(missing_ok=True)


def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-stores-") as d:
        tmp = Path(d)
        rt, env = _setup(tmp / "home", None)
        try:
            _records(report, "SQLite", rt, env, None)
            pg = _pg_schema()
            if isinstance(pg, str):
                report.section("stores: records vs raw driver + AESGCM (PostgreSQL)").unavailable(
                    "all", "PostgreSQL", pg
                )
            else:
                url, conninfo, drop = pg
                try:
                    prt, penv = _setup(tmp / "home-pg", url)
                    try:
                        _records(report, "PostgreSQL", prt, penv, conninfo)
                    finally:
                        prt.close()
                finally:
                    drop()
            if int(os.environ.get("BENCH_BIG_PUT_MANY", "250000")) > 0:
                _big_put_many(report, env)
            if not os.environ.get("BENCH_SKIP_FILES"):
                _files(report, env, tmp)
        finally:
            rt.close()
