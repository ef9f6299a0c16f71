"""Key coverage: `key coverage` over N encrypted rows vs the bare grouped query it is built on (the
raw sqlite3 driver: `SELECT dek_id, count(*), sum(length(value)) ... GROUP BY dek_id`) and vs a
brute-force count (read every row, parse its header in Python), timed round-robin in one run.

Knob: KEYSHIFT_BENCH_COVERAGE_N (rows, default 100,000). SQLite state database in a temp home.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.common import Report

ROUNDS = 7


def _rounds(fns: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Seconds per call of each function, ROUNDS rounds, the functions in turn within a round."""
    for fn in fns.values():
        fn()  # warm-up
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - start)
    return out


def run(report: Report) -> None:
    from keyshift.bootstrap import init_home
    from keyshift.control import coverage
    from keyshift.control.environments import create_environment
    from keyshift.control.tenants import create_tenant
    from keyshift.crypto.format import parse_record_header
    from keyshift.runtime import Runtime
    from keyshift.stores.records import RecordStore

    n = int(os.environ.get("KEYSHIFT_BENCH_COVERAGE_N", "100000"))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        rt = Runtime.open(home=home, principal="operator:bench")
        try:
            create_tenant(rt, "bench")
            env = str(create_environment(rt, "bench", "bench-prod")["id"])
            store = RecordStore(rt, env)
            for start in range(0, n, 5000):
                store.put_many(
                    "t",
                    [(f"r{i:08d}", {"n": i, "pad": "x" * 64}) for i in range(start, min(n, start + 5000))],
                )
            vault, key = rt.settings.platform_vault, rt.settings.platform_key
            conn = sqlite3.connect(home / "state.db")

            def bare() -> object:
                return conn.execute(
                    "SELECT dek_id, count(*), sum(length(value)) FROM data_records "
                    "WHERE environment_id = ? GROUP BY dek_id",
                    (env,),
                ).fetchall()

            def keyshift() -> object:
                view = coverage.key_coverage(rt, vault, key)
                assert view["all_versions"]["totals"]["rows"] == n
                return view

            def brute() -> object:
                c: Counter[bytes] = Counter()
                for (value,) in conn.execute(
                    "SELECT value FROM data_records WHERE environment_id = ?", (env,)
                ):
                    c[parse_record_header(value).dek_id] += 1
                assert sum(c.values()) == n
                return c

            times = _rounds({"bare": bare, "keyshift": keyshift, "brute": brute})
            conn.close()
        finally:
            rt.close()
    section = report.section(
        "Key coverage",
        f"{n:,} encrypted rows in one environment (platform key), SQLite; median of {ROUNDS} interleaved "
        "rounds, spread = min-max",
    )
    section.higher_is_better = False
    labels = {
        "bare": ("bare grouped query (sqlite3 driver)", True),
        "keyshift": ("Keyshift key coverage (all stores)", False),
        "brute": ("brute force: every row's header in Python", False),
    }
    for name, (label, base) in labels.items():
        ts = times[name]
        section.add(
            "seconds per coverage",
            label,
            statistics.median(ts),
            "s",
            baseline=base,
            note=f"spread {min(ts):.4f}-{max(ts):.4f} s",
        )
