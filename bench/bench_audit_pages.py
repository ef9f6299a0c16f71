"""Audit trail pages: the admin center's keyset page (`audit_search.search`, `before=` cursor) deep
in a large audit table vs the same page cut with OFFSET (the raw sqlite3 driver, no ORM), and the
first page. Time per page, median of interleaved rounds.

Knob: KEYSHIFT_BENCH_AUDIT_N (audit rows, default 200,000; 9 in 10 are `api.request` rows, which
the page leaves out by default). SQLite state database in a temp home.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import tempfile
from pathlib import Path

from bench.common import Report, timed_rounds

PAGE = 50


def run(report: Report) -> None:
    from keyshift.bootstrap import init_home
    from keyshift.control import audit_search
    from keyshift.runtime import Runtime

    n = int(os.environ.get("KEYSHIFT_BENCH_AUDIT_N", "200000"))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        conn = sqlite3.connect(home / "state.db")
        rows = [
            (
                f"2026-01-01 00:00:{i % 60:02d}.000000",
                "token:tok_bench:operator",
                "api.request" if i % 10 else "environment.managed.enable",
                "http" if i % 10 else "environment",
                f"GET /x/{i}" if i % 10 else f"env_{i:020d}",
                None,
                "ok",
                None,
                json.dumps({"status": 200}),
            )
            for i in range(n)
        ]
        conn.executemany(
            "INSERT INTO admin_audit (at, principal, action, target_type, target_id, tenant_id, outcome, "
            "reason, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.commit()
        rt = Runtime.open(home=home, principal="operator:bench")
        try:
            flt = audit_search.AuditFilter()
            offset = (n // 10) // 2  # half-way through the events the page shows
            shown = "FROM admin_audit WHERE action != 'api.request' ORDER BY id DESC"
            # The keyset cursor is the id just above the page: the same 50 rows as OFFSET `offset`.
            (cursor,) = conn.execute(f"SELECT id {shown} LIMIT 1 OFFSET ?", (offset - 1,)).fetchone()

            def first() -> object:
                return audit_search.search(rt, flt, scope_tenant=None, limit=PAGE)

            def keyset() -> object:
                page = audit_search.search(rt, flt, scope_tenant=None, before=cursor, limit=PAGE)
                assert [e["id"] for e in page["events"]] == expected
                return page

            def by_offset() -> list[tuple[object, ...]]:
                got = conn.execute(f"SELECT * {shown} LIMIT ? OFFSET ?", (PAGE, offset)).fetchall()
                assert len(got) == PAGE
                return got

            expected = [r[0] for r in by_offset()]
            times = timed_rounds({"first": first, "keyset": keyset, "offset": by_offset}, rounds=7)
        finally:
            rt.close()
            conn.close()
    section = report.section(
        "Audit trail pages",
        f"{n:,} audit rows (1 in 10 shown by default), a page of {PAGE} half-way down, SQLite; "
        "median of 7 interleaved rounds",
    )
    section.higher_is_better = False
    labels = {
        "offset": ("same page by OFFSET (sqlite3 driver)", True),
        "keyset": ("Keyshift keyset page (before= cursor, with names)", False),
        "first": ("Keyshift first page", False),
    }
    for name, (label, base) in labels.items():
        ts = times[name]
        section.add(
            "seconds per page",
            label,
            statistics.median(ts),
            "s",
            baseline=base,
            note=f"spread {min(ts):.4f}-{max(ts):.4f} s",
        )
