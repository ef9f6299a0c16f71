"""SDK round trips of the feature storages: search fields and search, lake export/list/read, backups
create/list/restore — over the same services as the CLI and the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from features.helpers import make_env, snapshot
from keyshift.errors import ConflictError, NotFoundError, UsageError
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime
from keyshift.sdk import Environment, Keyshift

ROWS = {
    "a1": {"name": "Fabrikam Inc", "city": "Paris"},
    "a2": {"name": "Contoso Ltd", "city": "Paris"},
    "a3": {"name": "Northwind Traders", "city": "Oslo"},
}


def _env(rt: Runtime) -> Environment:
    make_env(rt)
    env = Keyshift(rt).environment("contoso-prod")  # the fixture owns (and closes) the runtime
    env.records.put_many("accounts", list(ROWS.items()))
    return env


def _ids(out: dict) -> list[str]:
    return [r["id"] for r in out["results"]]


def test_search_round_trip(rt: Runtime) -> None:
    env = _env(rt)
    job = env.search_fields("accounts", ["name", "city"])
    assert job["state"] == "succeeded" and job["kind"] == "search_rebuild"
    assert _ids(env.search("accounts", "paris")) == ["a1", "a2"]
    out = env.search("accounts", "Oslo NORTHWIND")
    assert _ids(out) == ["a3"] and out["results"][0]["value"] == ROWS["a3"]
    assert _ids(env.search("accounts", "paris", limit=1)) == ["a1"]
    # Without waiting, the new generation is built by a worker while the old one answers.
    view = env.search_fields("accounts", ["city"], wait=False)
    assert view["state"] == "building" and view["fields"] == ["city"]
    assert _ids(env.search("accounts", "fabrikam")) == ["a1"]
    assert Worker(rt).run_job(view["job"]) == "succeeded"
    assert _ids(env.search("accounts", "fabrikam")) == []
    assert _ids(env.search("accounts", "paris")) == ["a1", "a2"]


def test_lake_round_trip(rt: Runtime) -> None:
    env = _env(rt)
    export = env.lake.export("accounts")
    assert export["rows"] == 3 and export["table"] == "accounts"
    assert [x["path"] for x in env.lake.list()] == [export["path"]]
    back = env.lake.read(export["path"])
    assert back["rows"] == 3 and {r["id"]: r["value"] for r in back["records"]} == ROWS
    assert env.lake.read(export["path"], limit=1)["returned"] == 1
    with pytest.raises(NotFoundError):
        env.lake.read("accounts/none.parquet")


def test_backups_round_trip(rt: Runtime) -> None:
    env = _env(rt)
    backup = env.backups.create(note="before", retention_days=3)
    assert backup["state"] == "ready" and backup["counts"]["records"] == 3
    assert [b["id"] for b in env.backups.list()] == [backup["id"]]
    env.records.put("accounts", "a1", {"name": "changed"})
    env.records.delete("accounts", "a2")
    out = env.backups.restore(backup["id"])
    assert out["backup"] == backup["id"]
    assert env.records.get("accounts", "a1") == ROWS["a1"]
    assert env.records.get("accounts", "a2") == ROWS["a2"]
    with pytest.raises(NotFoundError):
        env.backups.restore("bak_unknown")


def test_refusals_raise_domain_errors_and_change_nothing(rt: Runtime) -> None:
    env = _env(rt)
    make_env(rt, "legacy-prod", tenant="legacy", byok=True)
    legacy = Keyshift(rt).environment("legacy-prod")
    before = snapshot(rt)
    for call in (
        lambda: legacy.search_fields("accounts", ["name"]),
        lambda: legacy.search("accounts", "paris"),
        lambda: legacy.lake.export("accounts"),
        lambda: legacy.backups.create(),
    ):
        with pytest.raises(ConflictError) as e:
            call()
        assert e.value.code == "sql_restriction"
    with pytest.raises(ConflictError) as e:
        env.search("accounts", "paris")
    assert e.value.code == "no_searchable_fields"
    with pytest.raises(UsageError):
        env.search("accounts", "paris", limit=0)
    with pytest.raises(UsageError):
        env.backups.create(retention_days=0)
    assert snapshot(rt) == before
