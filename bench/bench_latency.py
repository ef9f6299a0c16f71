"""Client p99 of get+put from a separate process, during a re-encrypting migration vs without.

For SQLite and PostgreSQL: an environment of BENCH_LATENCY_ROWS rows (default 5,000) bound to a
customer key. A client *process* (bench/latency_client.py) loops `records.get` + `records.put`
and records each pair's latency. Rounds alternate: "without" (the client runs alone for as long
as the previous migration took, at least 2 s) and "during" (an unpaced `link --reencrypt`
migration runs to its end in a worker process set up as `keyshift worker` runs — its default
niceness, the health monitor between batches — then is unlinked back for the next round, outside
the window). The ratio is p99 during ÷ p99 without, per round; its median and spread are
reported (target <= 2x).
On a shared machine the client competes for the CPU with the migration and with everything else
running: read the spread. BENCH_LATENCY_DBS (default "sqlite,postgresql") picks the databases.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Report

ROWS = int(os.environ.get("BENCH_LATENCY_ROWS", "5000"))
ROUNDS = int(os.environ.get("BENCH_LATENCY_ROUNDS", "3"))
DATABASES = tuple(os.environ.get("BENCH_LATENCY_DBS", "sqlite,postgresql").split(","))
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HERE = Path(__file__).resolve().parent


def _setup(home: Path, url: str | None) -> tuple[Any, str, str]:
    from keyshift.bootstrap import init_home
    from keyshift.control import environments, health, policies, tenants, vaults
    from keyshift.runtime import Runtime
    from keyshift.stores.records import RecordStore

    init_home(home, database_url=url)
    rt = Runtime.open(home=home, database_url=url, principal="operator:bench")
    tenants.create_tenant(rt, "lat")
    env = environments.create_environment(rt, "lat", "lat-prod", env_type="production")
    environments.set_managed(rt, "lat-prod", True)
    vaults.create_local_vault(rt, "kvlat", soft_delete_days=90, purge_protection=True)
    vaults.create_key(rt, "kvlat", "cmk", "RSA", 3072)
    pol = policies.create_policy(
        rt, "lat", "plat", region=rt.settings.default_region, vault="kvlat", key="cmk"
    )
    vaults.grant_key(rt, "kvlat", "cmk", pol["identity"], "get,wrapKey,unwrapKey")
    health.check_policy(rt, pol["id"])
    store = RecordStore(rt, env["id"])
    value = {"name": "Customer", "email": "c@example.com", "balance": 12.5, "notes": "x" * 80}
    store.put_many("accounts", [(f"a{i:07d}", {**value, "i": i}) for i in range(ROWS)])
    return rt, str(env["id"]), str(pol["id"])


def _worker(home: Path, url: str | None, job_id: str) -> None:
    """The job's worker process, as `keyshift worker` runs it (default niceness, monitor between
    batches)."""
    from keyshift.jobs.priority import DEFAULT_NICE, lower_priority
    from keyshift.jobs.runner import Worker
    from keyshift.runtime import Runtime

    code = 3
    try:
        lower_priority(DEFAULT_NICE)
        with Runtime.open(home=home, database_url=url, principal="operator:bench-worker") as rt:
            state = Worker(rt, poll_seconds=0.005, health_between_batches=True).run_job(job_id)
        code = 0 if state == "succeeded" else 4
    finally:
        os._exit(code)


def _migrate(rt: Any, home: Path, url: str | None, env_id: str, policy_id: str) -> float:
    """One unpaced re-encrypting link, run to the end by a worker process; returns its seconds."""
    import multiprocessing

    from keyshift.migrate.link import start_link

    t0 = time.perf_counter()
    view = start_link(rt, policy_id, env_id, reencrypt=True)
    proc = multiprocessing.get_context("fork").Process(target=_worker, args=(home, url, view["id"]))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"migration worker ended with {proc.exitcode}")
    return time.perf_counter() - t0


def _unlink(rt: Any, env_id: str, policy_id: str) -> None:
    from keyshift.jobs.runner import Worker
    from keyshift.migrate.link import start_unlink

    Worker(rt, poll_seconds=0.005).run_job(start_unlink(rt, policy_id, env_id)["id"])


class Client:
    """The client process: started, waited for until ready, stopped by closing its stdin."""

    def __init__(self, home: Path, url: str | None, env_id: str) -> None:
        cmd = [sys.executable, str(HERE / "latency_client.py"), str(home), url or "", env_id]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"latency client failed to start: {line!r} {err[-500:]}")

    def stop(self) -> list[float]:
        out, err = self.proc.communicate(input="", timeout=120)
        if self.proc.returncode != 0:
            raise RuntimeError(f"latency client failed: {err[-500:]}")
        return [float(x) for x in json.loads(out)]


def _p99(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * 0.99))] if s else float("nan")


def _one_db(report: Report, label: str, home: Path, url: str | None) -> None:
    section = report.section(
        f"latency: client p99 of get+put from a separate process ({label})",
        f"{ROWS:,} rows; unpaced link --reencrypt in a worker process (as `keyshift worker`) vs "
        f"none; ratio = p99 during ÷ p99 without, median of {ROUNDS} alternating rounds "
        "(spread min-max); target <= 2x",
    )
    rt, env_id, policy_id = _setup(home, url)
    try:
        without: list[float] = []
        during: list[float] = []
        counts = {"without": 0, "during": 0}
        window = 2.0
        for _ in range(ROUNDS):
            client = Client(home, url, env_id)
            time.sleep(window)
            samples = client.stop()
            without.append(_p99(samples))
            counts["without"] += len(samples)
            client = Client(home, url, env_id)
            window = max(2.0, _migrate(rt, home, url, env_id, policy_id))
            samples = client.stop()
            during.append(_p99(samples))
            counts["during"] += len(samples)
            _unlink(rt, env_id, policy_id)
        group = "p99 seconds of get+put (lower is better)"
        section.add_rounds(group, "client alone", without, unit="s", note=f"{counts['without']} samples")
        # The per-round ratio is during ÷ without: for latencies, lower is better.
        section.add_rounds(
            group,
            "client during a re-encrypting migration",
            during,
            without,
            unit="s",
            note=f"{counts['during']} samples",
        )
    finally:
        rt.close()


def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-latency-") as d:
        if "sqlite" in DATABASES:
            _one_db(report, "SQLite", Path(d) / "home", None)
        if "postgresql" not in DATABASES:
            return
        base = os.environ.get("KEYSHIFT_BENCH_PG", PG_DEFAULT)
        try:
            from sqlalchemy import create_engine, text

            admin = create_engine(base, connect_args={"connect_timeout": 3})
            name = f"ks_lat_{secrets.token_hex(4)}"
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{name}"'))
        except Exception as exc:
            report.section("latency: client p99 (PostgreSQL)").unavailable(
                "all", "PostgreSQL", f"unreachable: {type(exc).__name__}"
            )
            return
        try:
            sep = "&" if "?" in base else "?"
            _one_db(report, "PostgreSQL", Path(d) / "home-pg", f"{base}{sep}options=-csearch_path%3D{name}")
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
            admin.dispose()
