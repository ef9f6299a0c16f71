"""`make bench` ends with every issue-14 target, read back from the sections that measured it."""

from __future__ import annotations

from bench.common import Report
from bench.targets import TARGETS, summary


def test_targets_table_reports_median_spread_and_verdict() -> None:
    report = Report()
    stores = report.section("stores: records vs raw driver + AESGCM (SQLite)")
    raw = [100.0, 100.0, 100.0, 100.0, 100.0]
    stores.add_rounds("scan rows/s", "raw driver + pyca AESGCM (same work)", raw, unit="rows/s")
    stores.add_rounds("scan rows/s", "Keyshift records", [60.0, 65.0, 80.0, 90.0, 75.0], raw, "rows/s")
    stores.add_rounds("point get ops/s", "raw driver + pyca AESGCM (same work)", raw)
    stores.add_rounds("point get ops/s", "Keyshift records", [40.0, 45.0, 50.0, 55.0, 60.0], raw)
    cli = report.section("CLI start-up (wall seconds, median of 10 fresh processes, interleaved)")
    cli.add("start-up", "keyshift --help", 0.12, "s")
    cli.add("start-up", "keyshift data get", 0.9, "s")

    section = summary(report)
    assert section is not None
    rows = {r.group: r for r in section.rows}
    assert len(rows) == len(TARGETS)
    scan = rows["scan (SQLite)"]
    assert scan.value == 0.75 and scan.note.startswith("met; spread 0.60-0.90")
    assert rows["point get (SQLite)"].value == 0.5 and rows["point get (SQLite)"].note.startswith("met")
    assert rows["keyshift --help (idle machine)"].note.startswith("met")
    assert rows["keyshift data get (idle machine)"].note.startswith("NOT met")
    assert rows["scan (PostgreSQL)"].unavailable == "not measured in this run"
    assert rows["put_many (SQLite)"].unavailable == "not measured in this run"


def test_no_summary_when_no_target_was_measured() -> None:
    report = Report()
    report.section("crypto: streaming 64 MiB").add("encrypt", "raw", 1.0)
    assert summary(report) is None
