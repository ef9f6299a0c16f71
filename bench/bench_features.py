"""Feature storages: blind search over 100,000 indexed records (query median, index size) and the
data lake export to encrypted Parquet vs the same export without encryption, in the same run.

Lake export at 1,000,000 rows: the Parquet-writing stage (the part encryption changes) is measured
on 1,000,000 rows; the whole pipeline (records decrypted from the state DB -> Parquet) on 100,000
rows, because loading a million encrypted records first would take most of the bench budget.
Environment knobs: KEYSHIFT_BENCH_SEARCH_N, KEYSHIFT_BENCH_LAKE_N, KEYSHIFT_BENCH_PIPELINE_N.
"""

from __future__ import annotations

import io
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from bench.common import Report

VOCAB = 5000
CITIES = 200


def _open(tmp: Path):  # type: ignore[no-untyped-def]
    from keyshift.bootstrap import init_home
    from keyshift.runtime import Runtime

    init_home(tmp / "home", allow_fake_clock=True)
    return Runtime.open(home=tmp / "home", principal="operator:bench")


def _env(rt, features: list[str]) -> str:  # type: ignore[no-untyped-def]
    import keyshift.features  # noqa: F401
    from keyshift.control.environments import create_environment, enable_feature
    from keyshift.control.tenants import create_tenant

    create_tenant(rt, "bench")
    env = create_environment(rt, "bench", "bench-prod")
    for f in features:
        enable_feature(rt, "bench-prod", f)
    return str(env["id"])


def _search(report: Report, n: int) -> None:
    from keyshift.features import search, search_jobs
    from keyshift.jobs.runner import Worker
    from keyshift.stores.records import RecordStore

    section = report.section(
        "Feature storages: blind search",
        f"{n:,} records, 2 searchable fields (3 words from {VOCAB:,} + 1 of {CITIES} cities), SQLite",
    )
    section.higher_is_better = False
    rng = random.Random(7)
    words = [f"w{i:04d}" for i in range(VOCAB)]
    cities = [f"city{i:03d}" for i in range(CITIES)]
    with tempfile.TemporaryDirectory() as d:
        rt = _open(Path(d))
        try:
            env = _env(rt, ["search"])
            rs = RecordStore(rt, env)
            db = Path(d) / "home" / "state.db"
            t0 = time.perf_counter()
            for start in range(0, n, 5000):
                rs.put_many(
                    "accounts",
                    [
                        (f"r{i:07d}", {"name": " ".join(rng.sample(words, 3)), "city": rng.choice(cities)})
                        for i in range(start, min(n, start + 5000))
                    ],
                )
            load = time.perf_counter() - t0
            size_before = _db_size(rt, db)
            t0 = time.perf_counter()
            view = search_jobs.set_fields(rt, "bench-prod", "accounts", ["name", "city"])
            state = Worker(rt, lease_seconds=600).run_job(view["job"])
            rebuild = time.perf_counter() - t0
            size_after = _db_size(rt, db)
            postings = search.index_size(rt, env)["postings"]

            def timed(q: str) -> float:
                t = time.perf_counter()
                search.search(rt, "bench-prod", "accounts", q, limit=10)
                return (time.perf_counter() - t) * 1000

            for q in ("w0001", "city001", "w0002 city003"):
                timed(q)  # warm caches
            one = [timed(rng.choice(words)) for _ in range(200)]
            city = [timed(rng.choice(cities)) for _ in range(200)]
            both = [timed(f"{rng.choice(words)} {rng.choice(cities)}") for _ in range(200)]
        finally:
            rt.close()
    section.add("query (limit 10)", "one rare word (~30 hits)", statistics.median(one), "ms", note=_p(one))
    section.add("query (limit 10)", "one city (~500 hits)", statistics.median(city), "ms", note=_p(city))
    section.add("query (limit 10)", "word AND city", statistics.median(both), "ms", note=_p(both))
    section.add("index", "postings", float(postings), "rows", note=f"rebuild job {state}")
    section.add("index", "index size (DB growth)", (size_after - size_before) / (1 << 20), "MiB")
    section.add(
        "index", "rebuild job over all records", rebuild, "s", note=f"load with postings off {load:.1f} s"
    )


def _db_size(rt, db: Path) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    with rt.engine.connect() as conn:
        pages = conn.execute(text("PRAGMA page_count")).scalar_one()
        free = conn.execute(text("PRAGMA freelist_count")).scalar_one()
        size = conn.execute(text("PRAGMA page_size")).scalar_one()
    return int((pages - free) * size)


def _p(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=100)
    return f"p90 {q[89]:.2f} ms, p99 {q[98]:.2f} ms"


def _lake(report: Report, n: int, pipeline_n: int) -> None:
    from keyshift.features import lake
    from keyshift.stores.envstate import env_states
    from keyshift.stores.keys import data_keys
    from keyshift.stores.records import RecordStore

    section = report.section(
        "Feature storages: data lake export",
        "encrypted Parquet (modular encryption, vault-backed KMS client) vs the same export unencrypted",
    )
    rng = random.Random(3)
    now = datetime.now(UTC)
    # A random token per row keeps the data from compressing to almost nothing (which would hide
    # the encryption cost behind the codec).
    values = [
        f'{{"name":"customer {i}","city":"city{rng.randrange(200)}","n":{i},'
        f'"token":"{rng.getrandbits(96):024x}"}}'
        for i in range(n)
    ]
    batches = [
        pa.RecordBatch.from_pydict(
            {
                "id": [f"r{i:07d}" for i in range(s, min(n, s + lake.ROW_GROUP))],
                "version": [1] * (min(n, s + lake.ROW_GROUP) - s),
                "updated_at": [now] * (min(n, s + lake.ROW_GROUP) - s),
                "value": values[s : s + lake.ROW_GROUP],
            },
            schema=lake.SCHEMA,
        )
        for s in range(0, n, lake.ROW_GROUP)
    ]
    with tempfile.TemporaryDirectory() as d:
        rt = _open(Path(d))
        try:
            env_id = _env(rt, ["data-lake"])
            env = env_states(rt).require_usable(env_id)
            dek, _ = data_keys(rt).primary(rt, env, "lake")

            def write(encrypted: bool) -> float:
                props = lake.encryption_properties(rt, env, dek.id.hex())[0] if encrypted else None
                t = time.perf_counter()
                lake.write_parquet(iter(batches), io.BytesIO(), props)
                return time.perf_counter() - t

            write(False)  # warm up (allocator, codec) before timing
            plain_t, enc_t = [], []
            for _ in range(3):  # interleaved, so drifting machine load hits both alike
                plain_t.append(write(False))
                enc_t.append(write(True))
            plain, enc = min(plain_t), min(enc_t)
            section.add("Parquet write stage", f"unencrypted, {n:,} rows", n / plain, "rows/s", baseline=True)
            section.add("Parquet write stage", f"encrypted, {n:,} rows", n / enc, "rows/s")

            rs = RecordStore(rt, env_id)
            for s in range(0, pipeline_n, 5000):
                rs.put_many(
                    "accounts",
                    [
                        (f"r{i:07d}", {"name": f"customer {i}", "n": i})
                        for i in range(s, min(pipeline_n, s + 5000))
                    ],
                )
            plain_runs, enc_runs = [], []
            for _ in range(2):  # interleaved, best of two each
                t = time.perf_counter()
                lake.write_parquet(lake.record_batches(rs, "accounts"), io.BytesIO(), None)
                plain_runs.append(time.perf_counter() - t)
                t = time.perf_counter()
                out = lake.export_table(rt, "bench-prod", "accounts")
                enc_runs.append(time.perf_counter() - t)
            plain_p, enc_p = min(plain_runs), min(enc_runs)
            section.add(
                "whole export",
                f"unencrypted, {pipeline_n:,} rows",
                pipeline_n / plain_p,
                "rows/s",
                baseline=True,
            )
            section.add(
                "whole export",
                f"lake export (encrypted, stored), {pipeline_n:,} rows",
                pipeline_n / enc_p,
                "rows/s",
                note=f"{out['size'] / (1 << 20):.1f} MiB file",
            )
        finally:
            rt.close()


def run(report: Report) -> None:
    _search(report, int(os.environ.get("KEYSHIFT_BENCH_SEARCH_N", "100000")))
    _lake(
        report,
        int(os.environ.get("KEYSHIFT_BENCH_LAKE_N", "1000000")),
        int(os.environ.get("KEYSHIFT_BENCH_PIPELINE_N", "100000")),
    )
