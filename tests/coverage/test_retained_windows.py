"""Retained wraps (BYOK -> CMK keeps the old wraps for the restore window): coverage counts them
with their end date, the gate refuses while they last, `key retire` says when it is safe, and the
SQL layout (legacy BYOK audit events and files) is counted like the rest."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from keycov_support import Cli, brute_force, byok_key, byok_world, live_deks, run

from keyshift.clock import FixedClock
from keyshift.control import coverage, tenants
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime

COMPARED = ("rows", "row_bytes", "events", "event_bytes", "files", "file_bytes")


def test_retained_windows_are_covered_until_they_end(
    rt: Runtime, tmp_path: Path, home: Path, db_url: str | None, clock: FixedClock
) -> None:
    byok_world(rt, tmp_path)
    bvault, bkey = byok_key(rt)
    before = coverage.key_coverage(rt, bvault, bkey)["all_versions"]
    expected = brute_force(rt, set(live_deks(rt, bvault, bkey)))
    assert expected["events"] == 9 and expected["files"] == 2  # SQL layout
    for k in COMPARED:
        assert before["totals"][k] == expected.get(k, 0), k
    assert before["data_keys"]["current"] == before["data_keys"]["total"] > 0

    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-1")
    assert run(rt, start_link(rt, "fab-pol", "fab-prod")["id"]) == "succeeded"
    until = (clock.now() + timedelta(days=rt.settings.byok_retention_days)).isoformat().replace("+00:00", "Z")
    after = coverage.key_coverage(rt, bvault, bkey)["all_versions"]
    assert after["data_keys"]["retained"] == after["data_keys"]["total"] == before["data_keys"]["total"]
    assert after["retained_windows"] == [
        {
            "environment": {"id": after["environments"][0]["id"], "name": "fab-prod"},
            "until": until,
            "data_keys": before["data_keys"]["total"],
        }
    ]
    assert after["totals"]["rows"] == 30

    cli = Cli(home, db_url, clock)
    err = cli("key", "disable", bvault, bkey, code=4)
    assert err["code"] == "key_in_use" and f"retained until {until}" in err["message"]
    until_z = until.replace("+00:00", "Z")  # timestamps end in Z, in JSON and messages alike
    r = cli("key", "retire", bvault, bkey, "--version", "1")
    assert r["safe_now"] is False and r["safe_after"] == until_z and r["jobs_started"] == []
    assert r["retained_windows"][0]["until"] == until_z

    clock.advance(days=rt.settings.byok_retention_days, seconds=1)  # the window has ended
    assert coverage.key_coverage(rt, bvault, bkey)["covered"] is False
    assert cli("key", "retire", bvault, bkey, "--version", "1")["safe_now"] is True
    assert cli("key", "disable", bvault, bkey)["state"] == "disabled"
