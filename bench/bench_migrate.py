"""Migrations: SQLite cases here, PostgreSQL at scale in bench/migrate_scale.py.

`python -m bench migrate --rows N --database-url postgresql+psycopg://...` runs the PostgreSQL
scale cases only (see migrate_scale.py); `make bench` runs the SQLite cases below, then the
PostgreSQL ones at 20,000 rows when the default test database is reachable.

* rewrap-only link of an environment with 10,000 vs 100,000 rows (KEYSHIFT_BENCH_MIGRATE_ROWS to
  change, e.g. "10000,1000000"): job time and vault calls. Rewrapping is O(DEKs): the vault calls
  stay the same whatever the row count; only the metadata pass grows.
* re-encrypting migration (--reencrypt: every row rewritten with compare-and-swap under a fresh
  DEK) vs a plain copy of the same rows through the same DB path, in the same chunked shape (per
  chunk of `rewrite_chunk` rows: one read transaction, then one write transaction of per-row
  version-checked UPDATEs; no crypto). Target >= 0.5x. KEYSHIFT_BENCH_REWRITE_CHUNK sets the
  chunk size for both (default: the migration's default for the database, 1 on SQLite);
  KEYSHIFT_BENCH_REENC_ROWS the row count (default 10,000).
* p99 latency of a reader+writer (records.get and records.put) with no migration vs during a
  re-encrypting migration, unpaced and paced (`worker --pace 1`). Target: during <= 2x without.
  The migration runs as in production, in a `keyshift worker` process; an in-process worker is
  shown too (it shares the interpreter lock with the client threads, which a deployment does not).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import Report

SIZES = tuple(int(x) for x in os.environ.get("KEYSHIFT_BENCH_MIGRATE_ROWS", "10000,100000").split(","))
REENC_ROWS = int(os.environ.get("KEYSHIFT_BENCH_REENC_ROWS", "10000"))
CHUNK = int(os.environ.get("KEYSHIFT_BENCH_REWRITE_CHUNK", "0"))  # 0: the migration's default
LATENCY_SECONDS = 3.0
FILL_BATCH = 5_000


def _home() -> Any:
    from keyshift.bootstrap import init_home
    from keyshift.runtime import Runtime

    path = Path(tempfile.mkdtemp(prefix="keyshift-bench-migrate-"))
    init_home(path)
    return path, Runtime.open(home=path, principal="operator:bench")


def _setup(rt: Any, tag: str, rows: int) -> tuple[str, str]:
    from keyshift.control import environments, health, policies, tenants, vaults
    from keyshift.stores.records import RecordStore

    tenants.create_tenant(rt, f"t{tag}")
    env = environments.create_environment(rt, f"t{tag}", f"e{tag}", env_type="production")
    environments.set_managed(rt, f"e{tag}", True)
    vaults.create_local_vault(rt, f"kv{tag}", soft_delete_days=90, purge_protection=True)
    vaults.create_key(rt, f"kv{tag}", "cmk", "RSA", 3072)
    pol = policies.create_policy(
        rt, f"t{tag}", f"p{tag}", region=rt.settings.default_region, vault=f"kv{tag}", key="cmk"
    )
    vaults.grant_key(rt, f"kv{tag}", "cmk", pol["identity"], "get,wrapKey,unwrapKey")
    health.check_policy(rt, pol["id"])
    store = RecordStore(rt, env["id"])
    value = {"name": "Customer", "email": "c@example.com", "balance": 12.5, "notes": "x" * 80}
    for lo in range(0, rows, FILL_BATCH):
        store.put_many(
            "accounts", [(f"a{i:07d}", {**value, "i": i}) for i in range(lo, min(rows, lo + FILL_BATCH))]
        )
    return str(env["id"]), str(pol["id"])


def _tune(rt: Any, job_id: str) -> None:
    """KEYSHIFT_BENCH_REWRITE_CHUNK: run the migration with that chunk size (job param)."""
    if not CHUNK:
        return
    from keyshift.jobs import store

    with rt.transaction() as s:
        j = store.find_job(s, job_id)
        j.params = {**j.params, "rewrite_chunk": CHUNK}


def _link(
    rt: Any, env_id: str, policy_id: str, *, reencrypt: bool = False, pace: float = 0.0
) -> tuple[float, int, int]:
    from keyshift.jobs.runner import Worker
    from keyshift.migrate.link import start_link
    from keyshift.stores.keys import data_keys

    keys = data_keys(rt)
    before = sum(keys.vault_calls.values())
    t0 = time.perf_counter()
    view = start_link(rt, policy_id, env_id, reencrypt=reencrypt)
    _tune(rt, view["id"])
    state = Worker(rt, poll_seconds=0.005, pace=pace).run_job(view["id"])
    elapsed = time.perf_counter() - t0
    if state != "succeeded":
        raise RuntimeError(f"migration ended {state}")
    from keyshift.jobs import store

    with rt.transaction() as s:
        deks = store.find_job(s, view["id"]).checkpoint.get("cutover", {}).get("deks", 0)
    return elapsed, sum(keys.vault_calls.values()) - before, int(deks)


def _rewrap(report: Report) -> None:
    section = report.section("migrate: rewrap-only link (O(DEKs))", "job time and vault calls by row count")
    path, rt = _home()
    try:
        for n in SIZES:
            env_id, pid = _setup(rt, f"r{n}", n)
            seconds, calls, deks = _link(rt, env_id, pid)
            section.add(
                "job seconds", f"{n:,} rows", seconds, "s", baseline=n == SIZES[0], note=f"{deks} DEKs"
            )
            section.add("vault calls", f"{n:,} rows", calls, "calls", baseline=n == SIZES[0])
    finally:
        rt.close()
        shutil.rmtree(path, ignore_errors=True)


def _reencrypt(report: Report) -> None:
    from sqlalchemy import bindparam, select, update

    from keyshift.db.models import DataRecord
    from keyshift.migrate.reencrypt import default_chunk

    path, rt = _home()
    chunk = CHUNK or default_chunk(rt)
    section = report.section(
        "migrate: re-encrypting migration vs plain copy",
        f"{REENC_ROWS:,} rows; plain = per chunk of {chunk} rows one read transaction + one "
        "transaction of version-checked UPDATEs, same engine, no crypto",
    )
    try:
        env_id, pid = _setup(rt, "c", REENC_ROWS)
        t = DataRecord.__table__
        here = (t.c.environment_id == env_id, t.c.table_name == "accounts")
        t0 = time.perf_counter()
        with rt.transaction() as s:
            keys = [r[0] for r in s.execute(select(t.c.record_id).where(*here).order_by(t.c.record_id))]
        cas = (
            update(t)
            .where(*here, t.c.record_id == bindparam("b_id"), t.c.version == bindparam("b_version"))
            .values(value=bindparam("b_value"), version=t.c.version + 1)
        )
        for lo in range(0, len(keys), chunk):
            with rt.transaction() as s:
                rows = s.execute(
                    select(t.c.record_id, t.c.value, t.c.version).where(
                        *here, t.c.record_id.in_(keys[lo : lo + chunk])
                    )
                ).all()
            with rt.transaction() as s:
                for rid, value, version in rows:
                    s.execute(cas, {"b_id": rid, "b_version": version, "b_value": bytes(value)})
        plain = time.perf_counter() - t0
        seconds, _calls, _deks = _link(rt, env_id, pid, reencrypt=True)
        section.add("rows/s", "plain copy, same DB path", REENC_ROWS / plain, "rows/s", baseline=True)
        section.add(
            "rows/s", f"Keyshift link --reencrypt (whole job, chunk {chunk})", REENC_ROWS / seconds, "rows/s"
        )
    finally:
        rt.close()
        shutil.rmtree(path, ignore_errors=True)


def _link_in_worker_process(path: Path, rt: Any, env_id: str, policy_id: str, pace: float) -> None:
    """Start the job here, run it in a separate `keyshift worker --once` process (as deployed)."""
    from keyshift.migrate.link import start_link

    _tune(rt, start_link(rt, policy_id, env_id, reencrypt=True)["id"])
    cmd = [sys.executable, "-c", "from keyshift.cli.main import main; main()"]
    cmd += ["--home", str(path), "worker", "--once", "--pace", str(pace)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)


def _unlink(rt: Any, env_id: str, policy_id: str) -> None:
    from keyshift.jobs.runner import Worker
    from keyshift.migrate.link import start_unlink

    view = start_unlink(rt, policy_id, env_id)
    Worker(rt, poll_seconds=0.005).run_job(view["id"])


def _p99(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * 0.99))] if s else float("nan")


def _load(rt: Any, env_id: str, stop: threading.Event, out: list[float]) -> None:
    from keyshift.stores.records import RecordStore

    store, i = RecordStore(rt, env_id), 0
    while not stop.is_set():
        t0 = time.perf_counter()
        store.get("accounts", f"a{i % 1000:07d}")
        store.put("accounts", f"live{i % 100}", {"i": i})
        out.append(time.perf_counter() - t0)
        i += 1


def _latency(report: Report) -> None:
    section = report.section(
        "migrate: p99 read+write latency",
        f"one get + one put per sample, {LATENCY_SECONDS:.0f}s without vs during a --reencrypt migration",
    )
    path, rt = _home()
    try:
        env_id, pid = _setup(rt, "l", REENC_ROWS)
        # without; during an unpaced migration; during one paced by the worker (--pace 1: after each
        # batch it leaves the database to clients for as long as the batch took)
        cases = (
            ("without migration", None, False),
            ("during migration, worker process (pace 0)", 0.0, True),
            ("during migration, worker process (pace 1)", 1.0, True),
            ("during migration, in-process worker (pace 0)", 0.0, False),
            ("during migration, in-process worker (pace 1)", 1.0, False),
        )
        for label, pace, separate in cases:
            stop, samples = threading.Event(), []  # type: ignore[var-annotated]
            th = threading.Thread(target=_load, args=(rt, env_id, stop, samples))
            th.start()
            if pace is not None:
                if separate:
                    _link_in_worker_process(path, rt, env_id, pid, pace)
                else:
                    _link(rt, env_id, pid, reencrypt=True, pace=pace)
                _unlink(rt, env_id, pid)
            else:
                time.sleep(LATENCY_SECONDS)
            stop.set()
            th.join()
            section.add(
                "p99 seconds (lower is better)",
                label,
                _p99(samples),
                "s",
                baseline=pace is None,
                note=f"{len(samples)} samples",
            )
    finally:
        rt.close()
        shutil.rmtree(path, ignore_errors=True)


def run(report: Report) -> None:
    from bench import migrate_scale

    argv = sys.argv[1:]
    if not any(a.startswith(("--rows", "--database-url")) for a in argv):
        # `make bench`: the SQLite cases, then PostgreSQL at the default size if it is reachable
        _rewrap(report)
        _reencrypt(report)
        _latency(report)
    migrate_scale.run(report, argv)
