"""Re-encrypting migrations on PostgreSQL at scale (`python -m bench migrate --rows N --database-url URL`).

Compared, interleaved in one run (each trial runs every case once, in a rotating order; the table
shows the median and the spread over trials):

* Keyshift `policy add-env --reencrypt` (whole job: plan, rewrap, cutover, re-encryption, sweep),
  one in-process worker, vs a *plain copy* of the same rows in the same shape with raw psycopg: the
  same key-range walk, the same range pages read, the same compare-and-swap write transaction per
  chunk (row locks, the same transaction settings, the same UPDATE), no crypto (value bytes written
  back as read; dek_id, an indexed column a re-encryption changes, changed too). The plain copy
  takes pages of min(4096, batch) rows, the largest Keyshift's adaptive chunk can reach: the
  strongest baseline of that shape.
* Vault calls of the whole job (a counting wrapper around the vault adapter) vs 4 + 2 x data keys.
  The worker runs the health monitor between batches as `keyshift worker` does; the monitor's own
  calls (a round trip per policy every `health_interval_seconds`, job or not) are shown apart.
* Per-decile batch time of the largest job: superlinear growth would show as later deciles slower.
* Statistics absent (a second schema: autovacuum off, never analyzed, pg_stats empty — checked) vs
  analyzed.
* 2 worker processes vs 1 on one job (SKIP LOCKED leases), vs the plain copy in 1 vs 2 processes.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Report, Section

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MAX_CHUNK = 4096
VAULT_OPS = ("describe", "wrap", "unwrap", "check_access")

PAGE_SQL = (
    "SELECT record_id, version, value, dek_id FROM data_records WHERE environment_id = %(env)s "
    "AND table_name = %(tbl)s AND record_id > %(after)s {upper} "
    "ORDER BY environment_id, table_name, record_id LIMIT %(n)s"
)
BOUND_SQL = (
    "SELECT record_id FROM data_records WHERE environment_id = %(env)s AND table_name = %(tbl)s "
    "AND record_id > %(after)s ORDER BY environment_id, table_name, record_id OFFSET %(off)s LIMIT 1"
)
LOCK_SQL = (
    "SELECT record_id FROM data_records WHERE environment_id = %(env)s AND table_name = %(tbl)s "
    "AND record_id >= %(lo)s AND record_id <= %(hi)s ORDER BY environment_id, table_name, record_id "
    "FOR UPDATE"
)
SETTINGS_SQL = (
    "SELECT set_config('enable_nestloop', 'off', true), set_config('synchronous_commit', 'off', true)"
)
CAS_SQL = """
    UPDATE data_records AS d
       SET value = v.value, dek_id = v.dek_id, version = d.version + 1, updated_at = now()
      FROM unnest(%(ids)s::varchar[], %(versions)s::bigint[], %(blobs)s::bytea[], %(deks)s::varchar[])
           AS v(record_id, version, value, dek_id)
     WHERE d.environment_id = %(env)s AND d.table_name = %(tbl)s
       AND d.record_id >= %(lo)s AND d.record_id <= %(hi)s
       AND d.record_id = v.record_id AND d.version = v.version
    RETURNING d.record_id
"""


def options(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench migrate", add_help=False)
    p.add_argument("--rows", type=int, default=int(os.environ.get("KEYSHIFT_BENCH_PG_ROWS", "20000")))
    p.add_argument("--database-url", default=os.environ.get("KEYSHIFT_BENCH_PG", DEFAULT_PG))
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--worker-trials", type=int, default=2)
    p.add_argument(
        "--no-absent",
        action="store_true",
        help="skip the statistics-absent case (halves the fill at 1M rows)",
    )
    args, _unknown = p.parse_known_args(argv)
    return args


def pg_reachable(url: str) -> str | None:
    from sqlalchemy import create_engine, text

    try:
        eng = create_engine(url, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL unreachable: {type(exc).__name__}"


class PgHome:
    """A Keyshift home whose state database is a fresh schema of the given PostgreSQL database."""

    def __init__(self, base_url: str, tag: str, *, autovacuum: bool) -> None:
        from sqlalchemy import create_engine, text

        from keyshift.bootstrap import init_home
        from keyshift.runtime import Runtime

        self.base_url = base_url
        self.schema = f"ksbench_{tag}_{secrets.token_hex(4)}"
        self.admin = create_engine(base_url)
        with self.admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        sep = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{sep}options=-csearch_path%3D{self.schema}"
        self.dsn = base_url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.path = Path(tempfile.mkdtemp(prefix="keyshift-bench-pg-"))
        init_home(self.path, database_url=self.url)
        if not autovacuum:
            self.sql("ALTER TABLE data_records SET (autovacuum_enabled = false)")
        self.rt = Runtime.open(home=self.path, database_url=self.url, principal="operator:bench")

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, options=f"-csearch_path={self.schema}", autocommit=True)

    def sql(self, stmt: str) -> Any:
        with self.connect() as conn:
            cur = conn.execute(stmt)
            return cur.fetchall() if cur.description else None

    def stats_rows(self) -> int:
        return int(
            self.sql(
                "SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() "
                "AND tablename = 'data_records'"
            )[0][0]
        )

    def close(self) -> None:
        from sqlalchemy import text

        self.rt.close()
        with self.admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()
        shutil.rmtree(self.path, ignore_errors=True)


# -- the plain copy (raw psycopg, no crypto) ------------------------------------------------------


def plain_ranges(conn: Any, env: str, table: str, size: int) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    after = ""
    while True:
        row = conn.execute(BOUND_SQL, {"env": env, "tbl": table, "after": after, "off": size - 1}).fetchone()
        if row is None:
            out.append((after, None))
            return out
        out.append((after, row[0]))
        after = row[0]


def plain_copy(conn: Any, env: str, table: str, ranges: list[tuple[str, str | None]], page: int) -> int:
    copied = 0
    for after, upper in ranges:
        sql = PAGE_SQL.format(upper="" if upper is None else "AND record_id <= %(upper)s")
        while True:
            with conn.transaction():
                rows = conn.execute(
                    sql, {"env": env, "tbl": table, "after": after, "upper": upper, "n": page}
                )
                rows = rows.fetchall()
            if not rows:
                break
            after = rows[-1][0]
            with conn.transaction():
                lo, hi = rows[0][0], rows[-1][0]
                conn.execute(LOCK_SQL, {"env": env, "tbl": table, "lo": lo, "hi": hi})
                conn.execute(SETTINGS_SQL)
                done = conn.execute(
                    CAS_SQL,
                    {
                        "env": env,
                        "tbl": table,
                        "lo": lo,
                        "hi": hi,
                        "ids": [r[0] for r in rows],
                        "versions": [r[1] for r in rows],
                        "blobs": [r[2] for r in rows],
                        # a re-encryption changes dek_id, an indexed column (no HOT update):
                        # so does the plain copy (reversed; Keyshift goes by the blob header)
                        "deks": [r[3][::-1] for r in rows],
                    },
                ).fetchall()
            copied += len(done)
            if len(rows) < page:
                break
    return copied


def _plain_child(home: PgHome, env: str, ranges: list[tuple[str, str | None]], page: int) -> None:
    try:
        with home.connect() as conn:
            plain_copy(conn, env, "accounts", ranges, page)
    except BaseException:
        os._exit(3)
    os._exit(0)


def run_plain(home: PgHome, env: str, batch: int, processes: int) -> float:
    page = min(MAX_CHUNK, batch)
    t0 = time.perf_counter()
    with home.connect() as conn:
        ranges = plain_ranges(conn, env, "accounts", batch)
        if processes == 1:
            plain_copy(conn, env, "accounts", ranges, page)
            return time.perf_counter() - t0
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_plain_child, args=(home, env, ranges[i::processes], page))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError("a plain-copy process failed")
    return time.perf_counter() - t0


# -- Keyshift ------------------------------------------------------------------------------------


_IN_MONITOR = threading.local()


def _watch_monitor() -> None:
    """Mark the health monitor's rounds, so its vault calls are counted apart from the job's (the
    worker runs it between batches, as `keyshift worker` does; it checks the policy every
    `health_interval_seconds` whether a job runs or not)."""
    from keyshift.control import monitor

    if getattr(monitor.monitor_once, "_bench_marked", False):
        return
    real = monitor.monitor_once

    def marked(rt: Any) -> Any:
        _IN_MONITOR.on = True
        try:
            return real(rt)
        finally:
            _IN_MONITOR.on = False

    marked._bench_marked = True  # type: ignore[attr-defined]
    monitor.monitor_once = marked


class CountingVault:
    def __init__(self, inner: Any, counts: Counter[str]) -> None:
        self._inner, self._counts = inner, counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in VAULT_OPS:
            return attr

        def counted(*a: Any, **k: Any) -> Any:
            self._counts[f"monitor {name}" if getattr(_IN_MONITOR, "on", False) else name] += 1
            return attr(*a, **k)

        return counted


def _start(rt: Any, policy: str, env: str, batch: int) -> str:
    from keyshift.jobs import store
    from keyshift.migrate.link import start_link

    view = start_link(rt, policy, env, reencrypt=True)
    with rt.transaction() as s:
        j = store.find_job(s, view["id"])
        j.params = {**j.params, "row_batch": batch}
    return str(view["id"])


def _unlink(rt: Any, policy: str, env: str) -> None:
    from keyshift.jobs.runner import Worker
    from keyshift.migrate.link import start_unlink
    from keyshift.stores.keys import data_keys

    view = start_unlink(rt, policy, env)
    if Worker(rt, poll_seconds=0.005).run_job(view["id"]) != "succeeded":
        raise RuntimeError("unlink failed")
    data_keys(rt).flush()


def run_keyshift(home: PgHome, policy: str, env: str, batch: int) -> dict[str, Any]:
    """One in-process worker; returns seconds, vault calls, data keys, batch end times, chunk size."""
    from sqlalchemy import func, select

    from keyshift.db.models import Dek
    from keyshift.jobs.runner import Worker
    from keyshift.migrate import reencrypt
    from keyshift.stores.keys import data_keys

    rt = home.rt
    data_keys(rt).flush()  # a cold cache, as a fresh worker has
    _watch_monitor()
    counts: Counter[str] = Counter()
    real = rt.vault
    rt.vault = lambda ref: CountingVault(real(ref), counts)  # type: ignore[method-assign,assignment]
    marks: list[float] = []

    def hook(name: str) -> None:
        if name == "reencrypt:rows":
            marks.append(time.perf_counter())

    try:
        t0 = time.perf_counter()
        job_id = _start(rt, policy, env, batch)
        worker = Worker(rt, poll_seconds=0.005, hooks={"point": hook}, health_between_batches=True)
        state = worker.run_job(job_id)
        seconds = time.perf_counter() - t0
    finally:
        del rt.vault
    if state != "succeeded":
        raise RuntimeError(f"migration ended {state}")
    with rt.transaction() as s:
        deks = int(s.scalar(select(func.count()).select_from(Dek).where(Dek.environment_id == env)) or 0)
    sizer = reencrypt._sizers.get(job_id)
    _unlink(rt, policy, env)
    return {
        "seconds": seconds,
        "calls": sum(n for op, n in counts.items() if not op.startswith("monitor ")),
        "detail": dict(counts),
        "deks": deks,
        "marks": marks,
        "chunk": sizer.size if sizer else None,
    }


def _worker_child(home: PgHome, job_id: str) -> None:
    from keyshift.jobs.runner import Worker
    from keyshift.runtime import Runtime

    try:
        with Runtime.open(home=home.path, database_url=home.url, principal="operator:bench-worker") as rt:
            Worker(rt, health_between_batches=True).run_job(job_id)  # as `keyshift worker` runs it
    except BaseException:
        os._exit(3)
    os._exit(0)


def run_keyshift_processes(home: PgHome, policy: str, env: str, batch: int, processes: int) -> float:
    """`processes` forked worker processes on one job (started here; the clock includes planning)."""
    from keyshift.jobs import store

    t0 = time.perf_counter()
    job_id = _start(home.rt, policy, env, batch)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker_child, args=(home, job_id)) for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    seconds = time.perf_counter() - t0
    with home.rt.transaction() as s:
        state = store.find_job(s, job_id).state
    if state != "succeeded" or any(p.exitcode for p in procs):
        raise RuntimeError(f"multi-worker migration ended {state}")
    _unlink(home.rt, policy, env)
    return seconds


# -- the report ----------------------------------------------------------------------------------


def _median_row(section: Section, group: str, name: str, values: list[float], unit: str, **kw: Any) -> None:
    note = kw.pop("note", "")
    spread = f"n={len(values)}, min {min(values):,.0f} max {max(values):,.0f}"
    section.add(group, name, statistics.median(values), unit, note=f"{spread}; {note}".strip("; "), **kw)


def _deciles(marks: list[float]) -> list[float]:
    """Mean seconds per batch in each tenth of the job's batches (the first batch is left out:
    its start is not observed)."""
    durations = [b - a for a, b in itertools.pairwise(marks)]
    if len(durations) < 10:
        return []
    out = []
    for d in range(10):
        part = durations[d * len(durations) // 10 : (d + 1) * len(durations) // 10]
        out.append(sum(part) / len(part))
    return out


def _decile_rows(section: Section, per_trial: list[list[float]], batch: int) -> None:
    """Per decile of the job's batches: the median over trials of the mean batch time (and the
    rows/s it means); then the last decile ÷ the first, per trial — superlinear growth with the
    table would show as a ratio well above 1."""
    trials = [d for d in per_trial if d]
    if not trials:
        return
    group = f"batch time by decile ({len(trials)} trials, median)"
    for i in range(10):
        values = [d[i] for d in trials]
        sec = statistics.median(values)
        spread = f"{min(values) * 1000:,.0f}-{max(values) * 1000:,.0f} ms"
        section.add(
            group,
            f"decile {i + 1}",
            sec * 1000,
            "ms",
            baseline=i == 0,
            note=f"{batch / sec:,.0f} rows/s; spread {spread}" if sec else "",
        )
    ratios = [d[9] / d[0] for d in trials if d[0]]
    if ratios:
        section.add(
            "growth: last decile ÷ first",
            "Keyshift link --reencrypt",
            statistics.median(ratios),
            "x",
            note="per trial: " + ", ".join(f"{r:.2f}" for r in ratios),
        )


def run(report: Report, argv: list[str]) -> None:
    from bench.bench_migrate import _setup

    args = options(argv)
    reason = pg_reachable(args.database_url)
    if reason:
        report.section("migrate at scale (PostgreSQL)").unavailable("all", "PostgreSQL", reason)
        return
    n = args.rows
    batch = min(5000, max(500, n // 20))  # >= 20 batches, so deciles mean something
    analyzed = PgHome(args.database_url, "an", autovacuum=True)
    absent = None if args.no_absent else PgHome(args.database_url, "na", autovacuum=False)
    try:
        fill0 = time.perf_counter()
        env_a, pol_a = _setup(analyzed.rt, "an", n)
        env_b, pol_b = _setup(absent.rt, "na", n) if absent else ("", "")
        fill = time.perf_counter() - fill0
        analyzed.sql("ANALYZE data_records")
        assert analyzed.stats_rows() > 0
        results: dict[str, list[Any]] = {"plain": [], "keyshift": [], "absent": []}
        cases: dict[str, Callable[[], Any]] = {
            "plain": lambda: run_plain(analyzed, env_a, batch, 1),
            "keyshift": lambda: run_keyshift(analyzed, pol_a, env_a, batch),
        }
        if absent is not None:
            cases["absent"] = lambda: run_keyshift(absent, pol_b, env_b, batch)
        order = list(cases)
        for trial in range(args.trials):
            k = trial % len(order)
            for name in order[k:] + order[:k]:
                if name == "absent" and absent is not None and absent.stats_rows() != 0:
                    raise RuntimeError("statistics appeared on the no-statistics schema")
                results[name].append(cases[name]())
        main = report.section(
            f"migrate at scale (PostgreSQL): {n:,} rows, re-encrypting link vs plain copy",
            f"{args.trials} interleaved trials, median (spread in notes); batches of {batch} rows; "
            f"plain copy = raw psycopg, same key ranges, pages of {min(MAX_CHUNK, batch)} rows, same "
            f"CAS UPDATE, no crypto; fill took {fill:.0f} s for both schemas",
        )
        _median_row(
            main,
            "rows/s",
            "plain copy (raw psycopg, no crypto)",
            [n / t for t in results["plain"]],
            "rows/s",
            baseline=True,
        )
        ks = results["keyshift"]
        _median_row(
            main,
            "rows/s",
            "Keyshift link --reencrypt, whole job, 1 worker",
            [n / r["seconds"] for r in ks],
            "rows/s",
            note=f"chunk settled at {ks[-1]['chunk']}",
        )
        _median_row(
            main,
            "statistics",
            "analyzed (ANALYZE after the fill)",
            [n / r["seconds"] for r in ks],
            "rows/s",
            baseline=True,
        )
        if results["absent"]:
            _median_row(
                main,
                "statistics",
                "absent (autovacuum off, pg_stats empty)",
                [n / r["seconds"] for r in results["absent"]],
                "rows/s",
            )
        calls = [r["calls"] for r in ks + results["absent"]]
        deks = max(r["deks"] for r in ks + results["absent"])
        main.add(
            "vault calls (whole job)",
            "bound 4 + 2 x data keys",
            4 + 2 * deks,
            "calls",
            baseline=True,
            note=f"{deks} data keys",
        )
        main.add(
            "vault calls (whole job)",
            "Keyshift, max over runs",
            max(calls),
            "calls",
            note=str(ks[0]["detail"]),
        )
        _decile_rows(main, [_deciles(r["marks"]) for r in ks], batch)
        if args.worker_trials > 0:
            _workers(report, analyzed, env_a, pol_a, n, batch, args.worker_trials)
    finally:
        analyzed.close()
        if absent is not None:
            absent.close()


def _workers(report: Report, home: PgHome, env: str, pol: str, n: int, batch: int, trials: int) -> None:
    section = report.section(
        f"migrate at scale (PostgreSQL): {n:,} rows, 1 vs 2 processes",
        f"{trials} interleaved trials, median; Keyshift: forked `Worker` processes sharing one job "
        "(SKIP LOCKED batch leases), clock includes planning; plain copy: the same ranges split "
        "between processes",
    )
    times: dict[str, list[float]] = {"p1": [], "p2": [], "k1": [], "k2": []}
    for trial in range(trials):
        order = ["p1", "k1", "p2", "k2"] if trial % 2 == 0 else ["k2", "p2", "k1", "p1"]
        for name in order:
            procs = int(name[1])
            if name[0] == "p":
                times[name].append(run_plain(home, env, batch, procs))
            else:
                times[name].append(run_keyshift_processes(home, pol, env, batch, procs))
    for kind, label in (("p", "plain copy"), ("k", "Keyshift link --reencrypt")):
        _median_row(
            section,
            f"rows/s: {label}",
            "1 process",
            [n / t for t in times[f"{kind}1"]],
            "rows/s",
            baseline=True,
        )
        _median_row(section, f"rows/s: {label}", "2 processes", [n / t for t in times[f"{kind}2"]], "rows/s")
    sp_plain = statistics.median(times["p1"]) / statistics.median(times["p2"])
    sp_ks = statistics.median(times["k1"]) / statistics.median(times["k2"])
    section.add("2-process speed-up", "plain copy", sp_plain, "x", baseline=True)
    section.add("2-process speed-up", "Keyshift", sp_ks, "x")
