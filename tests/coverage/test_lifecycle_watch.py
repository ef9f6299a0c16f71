"""Lifecycle watch: policy health turns `warning` N days (setting, default 30) before the key version
in use expires, naming the date and what goes offline; disabled versions that still cover data and
rotation age are reported; the numbers for metrics. Fake clock, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from keycov_support import KEY, VAULT, Cli, linked_world, run

from keyshift.api.app import create_app
from keyshift.clock import FixedClock
from keyshift.control import lifecycle, tokens, vaults
from keyshift.control.health import check_policy
from keyshift.migrate import maintenance
from keyshift.runtime import Runtime


def _offline(reasons: list[str]) -> list[str]:
    return [r for r in reasons if "it will take offline" in r]


def test_expiry_warning_on_the_right_day(
    rt: Runtime, home: Path, db_url: str | None, clock: FixedClock
) -> None:
    expires = clock.now() + timedelta(days=40)
    linked_world(rt, rows=6, events=2, files=1, expires=expires)
    cli = Cli(home, db_url, clock)
    day0 = cli("policy", "health", "pol1")
    assert day0["health"] == "healthy" and _offline(day0["reasons"]) == []
    # A longer horizon (setting) warns already today.
    wide = cli("policy", "health", "pol1", env={"KEYSHIFT_KEY_WARNING_DAYS": "45"}, code=4, printed=True)
    assert wide["health"] == "warning" and len(_offline(wide["reasons"])) == 1
    clock.advance(days=9, hours=23)  # 30 days and 1 hour before expiry: not yet
    assert _offline(cli("policy", "health", "pol1")["reasons"]) == []
    clock.advance(hours=1)  # exactly 30 days before
    out = cli("policy", "health", "pol1", code=4, printed=True)  # exit 4: not healthy
    (reason,) = _offline(out["reasons"])
    assert out["health"] == "warning"
    assert (
        f"version 1 of key {VAULT}/{KEY} expires at {expires.isoformat().replace('+00:00', 'Z')} (in 30 days)"
        in reason
    )
    assert "prod" in reason and "11 rows" in reason and "2 events" in reason and "1 files" in reason
    human = cli("policy", "health", "pol1", as_json=False, code=4, printed=True)
    assert "warning" in human and "it will take offline" in human
    # The admin audit trail and the stored policy carry it.
    shown = cli("policy", "show", "pol1")
    assert shown["health"] == "warning" and any("it will take offline" in r for r in shown["health_reasons"])

    # The API's policy health route says the same.
    token = tokens.create_token(rt, "operator", label="t")["token"]
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        resp = client.post("/api/v1/policies/pol1/health", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["health"] == "warning" and len(_offline(resp.json()["reasons"])) == 1


def test_disabled_version_covering_data_and_rotation_age(sqlite_rt: Runtime, clock: FixedClock) -> None:
    rt = sqlite_rt
    w = linked_world(rt, rows=3, events=1, files=0)
    vaults.rotate_key(rt, VAULT, KEY)
    vaults.set_key_enabled(rt, VAULT, KEY, False, version="1", force=True)  # prod is still on version 1
    report = check_policy(rt, w["policy"])
    disabled = [r for r in report.reasons if "is disabled while it still covers" in r]
    assert report.status == "warning" and len(disabled) == 1 and "prod" in disabled[0]
    vaults.set_key_enabled(rt, VAULT, KEY, True, version="1")
    (job,) = maintenance.detect_rotations(rt)["rotate_jobs"]
    assert run(rt, job) == "succeeded"
    vaults.set_key_enabled(rt, VAULT, KEY, False, version="1")  # covers nothing now: no warning, no gate
    assert check_policy(rt, w["policy"]).status == "healthy"

    rt.settings = rt.settings.model_copy(update={"key_rotation_days": 90})
    clock.advance(days=89)
    assert check_policy(rt, w["policy"]).status == "healthy"
    clock.advance(days=1)
    report = check_policy(rt, w["policy"])
    assert report.status == "warning"
    assert any("current version 2" in r and "90 days old" in r for r in report.reasons), report.reasons


def test_lifecycle_numbers_for_metrics(sqlite_rt: Runtime, clock: FixedClock) -> None:
    rt = sqlite_rt
    expires = clock.now() + timedelta(days=40)
    linked_world(rt, rows=2, events=1, files=0, expires=expires)
    clock.advance(days=30)
    (entry,) = lifecycle.lifecycle_numbers(rt)
    assert (entry["vault"], entry["key"], entry["current_version"]) == (VAULT, KEY, "1")
    (v1,) = entry["versions"]
    assert v1["days_to_expiry"] == 10.0 and v1["environments"] == ["prod"] and v1["data_keys"] > 0
    assert entry["rotation_age_days"] == 30.0 and entry["warnings"] == 1
    assert entry["scheduled_deletion"] is None


def test_deleted_key_purge_date_is_watched(sqlite_rt: Runtime, clock: FixedClock) -> None:
    rt = sqlite_rt
    linked_world(rt, rows=2, events=0, files=0)
    vaults.delete_key(rt, VAULT, KEY, force=True)  # soft delete: purged after the vault's 90 days
    purge_at = (clock.now() + timedelta(days=90)).isoformat().replace("+00:00", "Z")
    (entry,) = lifecycle.lifecycle_numbers(rt)
    assert entry["scheduled_deletion"] == purge_at and entry["days_to_deletion"] == 90.0
    assert entry["warnings"] == 0
    clock.advance(days=60)
    with rt.transaction() as s:
        from sqlalchemy import select

        from keyshift.db.models import VaultRecord

        vid = s.scalars(select(VaultRecord.id).where(VaultRecord.name == VAULT)).one()
    view = lifecycle.key_lifecycle(rt, vid, KEY)
    (w,) = view["warnings"]
    assert w["kind"] == "deletion" and w["date"] == purge_at and w["environments"] == ["prod"]
    assert "will be purged at" in w["reason"] and "(in 30 days)" in w["reason"] and "7 rows" in w["reason"]


def test_counts_are_read_only_when_a_warning_needs_them(
    sqlite_rt: Runtime, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monitor checks every policy often: without a warning only the wraps are read (no row,
    event or file counting, no file header scan)."""
    from keyshift.control import coverage

    rt = sqlite_rt
    w = linked_world(rt, rows=2, events=1, files=1, expires=clock.now() + timedelta(days=40))
    calls: list[int] = []
    real = coverage.dek_usage
    monkeypatch.setattr(coverage, "dek_usage", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert check_policy(rt, w["policy"]).status == "healthy" and calls == []
    clock.advance(days=11)
    report = check_policy(rt, w["policy"])
    assert report.status == "warning" and calls == [1]
    assert any("7 rows" in r for r in report.reasons)
