"""Automatic rotation: a policy's rotation period; when due the key is rotated in its vault, the
environments are rewrapped by the rotate job, and the audit trail has the history."""

from __future__ import annotations

from pathlib import Path

from keycov_support import KEY, VAULT, Cli, audit, linked_world, run
from sqlalchemy import select

from keyshift.clock import FixedClock
from keyshift.control import coverage
from keyshift.db.models import Environment, Policy
from keyshift.jobs import schedule
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys
from keyshift.stores.records import RecordStore


def _rotation_days(rt: Runtime) -> int | None:
    with rt.transaction() as s:
        return s.scalars(select(Policy.rotation_days).where(Policy.name == "pol1")).one()


def test_key_rotates_when_due_and_environments_follow(
    rt: Runtime, home: Path, db_url: str | None, clock: FixedClock
) -> None:
    w = linked_world(rt, rows=5, events=1, files=1)
    cli = Cli(home, db_url, clock)
    assert cli("policy", "rotation", "pol1", "--days", "30")["rotation_days"] == 30
    assert audit(rt, "policy.rotation.set")[0][3] == {"rotation_days": 30, "before": None}
    # Bad input: clear errors, nothing changes.
    assert cli("policy", "rotation", "pol1", "--days", "0", code=2)["code"] == "invalid_rotation"
    assert cli("policy", "rotation", "pol1", "--days", "5", "--off", code=2)["code"] == "invalid_argument"
    assert cli("policy", "rotation", "nope", "--days", "5", code=3)["code"] == "policy_not_found"
    assert _rotation_days(rt) == 30

    clock.advance(days=29)
    out = schedule.run_due(rt, only=("auto_rotate",))["auto_rotate"]
    assert out["rotated"] == [] and out["errors"] == {}
    clock.advance(days=1)
    out = schedule.run_due(rt, only=("auto_rotate",))["auto_rotate"]
    assert out["rotated"] == [{"policy": "pol1", "key": f"{VAULT}/{KEY}", "from": "1", "to": "2"}]
    assert len(out["rotate_jobs"]) == 1 and run(rt, out["rotate_jobs"][0]) == "succeeded"
    with rt.transaction() as s:
        assert s.get(Environment, w["prod"]).kek_key_version == "2"  # type: ignore[union-attr]
    view = coverage.key_coverage(rt, VAULT, KEY, vault_versions=["1", "2"])
    assert [v["covered"] for v in view["versions"]] == [False, True]
    data_keys(rt).flush()
    assert RecordStore(rt, w["prod"]).get("accounts", "a0001") == {"name": "n1", "city": "Oslo"}
    (entry,) = audit(rt, "policy.rotation.automatic")
    assert entry[0] == "ok" and entry[3]["from"] == "1" and entry[3]["to"] == "2"
    assert audit(rt, "key.rotate")[-1][0] == "ok"

    clock.advance(days=1)  # version 2 is one day old: nothing to do
    assert schedule.run_due(rt, only=("auto_rotate",))["auto_rotate"]["rotated"] == []
    assert cli("policy", "rotation", "pol1", "--off")["rotation_days"] is None
    clock.advance(days=60)
    assert schedule.run_due(rt, only=("auto_rotate",))["auto_rotate"]["rotated"] == []


def test_rotation_route(sqlite_rt: Runtime) -> None:
    from fastapi.testclient import TestClient

    from keyshift.api.app import create_app
    from keyshift.control import tokens

    rt = sqlite_rt
    linked_world(rt, rows=1, events=0, files=0)
    admin = tokens.create_token(rt, "tenant_admin", tenant="contoso")["token"]
    h = {"Authorization": f"Bearer {admin}"}
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        r = c.put("/api/v1/policies/pol1/rotation", json={"days": 90}, headers=h)
        assert r.status_code == 200 and r.json()["rotation_days"] == 90
        assert c.put("/api/v1/policies/pol1/rotation", json={"days": 0}, headers=h).status_code == 422
        assert _rotation_days(rt) == 90
        r = c.put("/api/v1/policies/pol1/rotation", json={"days": None}, headers=h)
        assert r.status_code == 200 and _rotation_days(rt) is None
