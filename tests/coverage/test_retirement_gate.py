"""Retirement gating: disable / delete / purge / revoke-grant refused while a key covers data (exit 4,
`key_in_use`, state unchanged), allowed once not; --force proceeds and is audited; `key retire`."""

from __future__ import annotations

from pathlib import Path

from keycov_support import KEY, VAULT, Cli, audit, key_state, linked_world, run

from keyshift.clock import FixedClock
from keyshift.control import coverage, vaults
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys
from keyshift.stores.records import RecordStore


def test_gated_actions_refused_while_covered_then_allowed(
    rt: Runtime, home: Path, db_url: str | None, clock: FixedClock
) -> None:
    w = linked_world(rt)
    cli = Cli(home, db_url, clock)
    assert cli("key", "rotate", VAULT, KEY)["current_version"] == "2"  # prod still on version 1
    before = key_state(rt)
    for args in (
        ("key", "disable", VAULT, KEY, "--version", "1"),
        ("key", "disable", VAULT, KEY),
        ("key", "delete", VAULT, KEY),
        ("key", "revoke-grant", VAULT, KEY, "--identity", w["identity"]),
    ):
        err = cli(*args, code=4)
        assert err["code"] == "key_in_use", args
        assert "prod" in err["message"] and "45 rows" in err["message"] and "12 events" in err["message"]
        assert key_state(rt) == before, args
    refused = audit(rt, "key.disable")
    assert [r[0] for r in refused] == ["error", "error"] and "key_in_use" in refused[0][2]
    assert audit(rt, "key.delete")[-1][0] == "error"
    # Version 2 covers nothing yet: disabling it alone is allowed (and enabling it back too).
    assert cli("key", "disable", VAULT, KEY, "--version", "2")["versions"][1]["enabled"] is False
    cli("key", "enable", VAULT, KEY, "--version", "2")

    # retire starts the rewrap job; afterwards version 1 covers nothing and can be disabled.
    r = cli("key", "retire", VAULT, KEY, "--version", "1")
    assert r["safe_now"] is False and [j["environment"]["name"] for j in r["jobs_started"]] == ["prod"]
    assert audit(rt, "key.retire")[-1][0] == "ok"
    assert run(rt, r["jobs_started"][0]["job"]["id"]) == "succeeded"
    again = cli("key", "retire", VAULT, KEY, "--version", "1")
    assert again["safe_now"] is True and again["jobs_started"] == [] and again["summary"] == "covers nothing"
    shown = cli("key", "disable", VAULT, KEY, "--version", "1")
    assert [v["enabled"] for v in shown["versions"]] == [False, True]
    data_keys(rt).flush()
    assert RecordStore(rt, w["prod"]).get("accounts", "a0001") == {"name": "n1", "city": "Oslo"}

    # Version 2 now covers prod: refused, unless forced (audited with what it overrode).
    before = key_state(rt)
    assert cli("key", "disable", VAULT, KEY, "--version", "2", code=4)["code"] == "key_in_use"
    assert key_state(rt) == before
    assert audit(rt, "key.disable.forced") == []
    forced = cli("key", "disable", VAULT, KEY, "--version", "2", "--force")
    assert [v["enabled"] for v in forced["versions"]] == [False, False]
    (outcome, target, reason, details) = audit(rt, "key.disable.forced")[0]
    assert outcome == "ok" and target == f"{VAULT}/{KEY} version 2" and "45 rows" in reason
    assert details["environments"] == ["prod"] and details["totals"]["rows"] == 45


def test_delete_purge_and_grant_removal_forced_are_audited(sqlite_rt: Runtime, clock: FixedClock) -> None:
    rt = sqlite_rt
    w = linked_world(rt, rows=3, events=1, files=1)
    cli = Cli(rt.home.path, None, clock)
    err = cli("key", "revoke-grant", VAULT, KEY, "--identity", w["identity"], code=4)
    assert err["code"] == "key_in_use" and "wraps made as" in err["message"]
    # A grant whose identity wrapped nothing is not gated.
    vaults.grant_key(rt, VAULT, KEY, "someone-else", "get")
    cli("key", "revoke-grant", VAULT, KEY, "--identity", "someone-else")
    cli("key", "delete", VAULT, KEY, "--force")
    assert audit(rt, "key.delete.forced")[0][0] == "ok"
    clock.advance(days=91)  # past the purge-protection window: only the gate stands in the way
    before = key_state(rt)
    assert cli("key", "purge", VAULT, KEY, code=4)["code"] == "key_in_use"
    assert key_state(rt) == before
    assert cli("key", "purge", VAULT, KEY, "--force")["purged"] is True
    assert audit(rt, "key.purge.forced")[0][3]["environments"] == ["prod"]


def test_retire_refusals(sqlite_rt: Runtime, clock: FixedClock) -> None:
    rt = sqlite_rt
    linked_world(rt, rows=2, events=1, files=0)
    cli = Cli(rt.home.path, None, clock)
    err = cli("key", "retire", VAULT, KEY, "--version", "1", code=4)
    assert err["code"] == "version_is_current"
    assert cli("key", "retire", VAULT, KEY, "--version", "9", code=3)["code"] == "key_not_found"
    assert cli("key", "retire", "nope", KEY, "--version", "1", code=3)["code"] == "vault_not_found"
    assert [r[0] for r in audit(rt, "key.retire")] == ["error", "error", "error"]
    assert "--version" in cli("key", "retire", VAULT, KEY, code=2, as_json=False)  # required


def test_human_output_names_what_is_covered(sqlite_rt: Runtime, clock: FixedClock) -> None:
    rt = sqlite_rt
    linked_world(rt, rows=2, events=1, files=1)
    cli = Cli(rt.home.path, None, clock)
    out = cli("key", "coverage", VAULT, KEY, as_json=False)
    assert "version 1" in out and "env prod" in out and "7 rows" in out
    out = cli("env", "coverage", "prod", as_json=False)
    assert f"{VAULT}/{KEY} version 1" in out
    view = cli("key", "coverage", VAULT, KEY, "--version", "1")
    assert view == coverage.key_coverage(rt, VAULT, KEY, version="1") | {"at": view["at"]}


def test_delete_purge_and_grant_removal_allowed_once_nothing_is_covered(
    sqlite_rt: Runtime, clock: FixedClock
) -> None:
    from keyshift.migrate.link import start_unlink

    rt = sqlite_rt
    w = linked_world(rt, rows=3, events=1, files=1)
    cli = Cli(rt.home.path, None, clock)
    assert cli("key", "delete", VAULT, KEY, code=4)["code"] == "key_in_use"
    assert run(rt, start_unlink(rt, "pol1", "prod")["id"]) == "succeeded"  # back to the platform key
    assert coverage.key_coverage(rt, VAULT, KEY)["covered"] is False
    cli("key", "revoke-grant", VAULT, KEY, "--identity", w["identity"])
    assert cli("key", "delete", VAULT, KEY)["state"] == "deleted"
    clock.advance(days=91)
    assert cli("key", "purge", VAULT, KEY)["purged"] is True
    for action in ("key.revoke_grant", "key.delete", "key.purge"):
        assert audit(rt, f"{action}.forced") == []
    data_keys(rt).flush()
    assert RecordStore(rt, w["prod"]).get("accounts", "a0002") == {"name": "n2", "city": "Oslo"}
