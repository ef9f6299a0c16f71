"""Coverage numbers equal a brute-force count over the stored data (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from keycov_support import KEY, VAULT, brute_force, linked_world, live_deks, run

from keyshift.control import coverage, vaults
from keyshift.errors import NotFoundError
from keyshift.migrate import maintenance
from keyshift.runtime import Runtime

COMPARED = (
    "rows",
    "row_bytes",
    "events",
    "event_bytes",
    "files",
    "search_indexes",
    "search_postings",
    "lake_exports",
    "lake_rows",
    "lake_bytes",
    "backups",
    "backup_bytes",
)


def _check(view: dict, expected: dict[str, int]) -> None:
    for k in COMPARED:
        assert view["totals"][k] == expected.get(k, 0), k


def test_key_coverage_matches_a_brute_force_count(rt: Runtime, db_url: str | None) -> None:
    if db_url is not None:  # the document store on PostgreSQL too (JSONB: the grouped query on doc->>'dek')
        rt.settings = rt.settings.model_copy(update={"document_store_url": db_url})
    w = linked_world(rt)
    view = coverage.key_coverage(rt, VAULT, KEY)
    assert [v["version"] for v in view["versions"]] == ["1"]
    v1 = view["versions"][0]
    deks = live_deks(rt, VAULT, KEY, "1")
    assert deks and set(deks.values()) == {w["prod"]}
    expected = brute_force(rt, set(deks))
    # the world really put something of every kind under the key
    for k in ("rows", "events", "files", "search_indexes", "search_postings", "lake_exports", "backups"):
        assert expected[k] > 0, k
    _check(v1, expected)
    assert v1["totals"]["rows"] == 5 + 40  # written before and after the link
    assert v1["totals"]["events"] == 12
    assert v1["totals"]["file_bytes"] == sum(len(b) for b in w["bodies"].values())
    assert v1["data_keys"] == {"total": len(deks), "current": len(deks), "pending": 0, "retained": 0}
    assert [t["name"] for t in v1["tenants"]] == ["contoso"]
    assert v1["environments"][0]["tenant"] == v1["tenants"][0]
    assert [e["name"] for e in v1["environments"]] == ["prod"]
    assert set(v1["stores"]) == {"records", "audit", "files", "search", "lake", "backup"}
    assert view["all_versions"]["totals"] == v1["totals"] and view["covered"] is True


def test_platform_key_and_env_coverage_match_brute_force(rt: Runtime) -> None:
    w = linked_world(rt)
    platform, pkey = rt.settings.platform_vault, rt.settings.platform_key
    deks = live_deks(rt, platform, pkey)
    assert set(deks.values()) == {w["dev"]}  # prod's DEKs moved to the customer key at link time
    view = coverage.key_coverage(rt, platform, pkey)
    _check(view["all_versions"], brute_force(rt, set(deks)))
    assert view["all_versions"]["totals"]["rows"] == 7

    env = coverage.env_coverage(rt, "prod")
    assert env["binding"]["vault"]["name"] == VAULT and env["binding"]["key"] == KEY
    assert env["environment"] == {"id": w["prod"], "name": "prod"} and env["tenant"]["name"] == "contoso"
    assert [(k["vault"]["name"], k["key"], k["version"]) for k in env["keys"]] == [(VAULT, KEY, "1")]
    _check(env["keys"][0], brute_force(rt, set(live_deks(rt, VAULT, KEY))))
    dev = coverage.env_coverage(rt, w["dev"])
    assert [(k["vault"]["name"], k["key"]) for k in dev["keys"]] == [(platform, pkey)]


def test_rotation_moves_coverage_to_the_new_version(rt: Runtime) -> None:
    linked_world(rt)
    vaults.rotate_key(rt, VAULT, KEY)
    jobs = maintenance.detect_rotations(rt)["rotate_jobs"]
    assert len(jobs) == 1 and run(rt, jobs[0]) == "succeeded"
    view = coverage.key_coverage(rt, VAULT, KEY, vault_versions=["1", "2"])
    by = {v["version"]: v for v in view["versions"]}
    assert by["1"]["covered"] is False and by["1"]["data_keys"]["total"] == 0
    expected = brute_force(rt, set(live_deks(rt, VAULT, KEY, "2")))
    _check(by["2"], expected)
    assert by["2"]["totals"]["rows"] == 45
    one = coverage.key_coverage(rt, VAULT, KEY, version="1")
    assert [v["version"] for v in one["versions"]] == ["1"] and one["covered"] is False


def test_coverage_of_an_unknown_vault_is_not_found(rt: Runtime) -> None:
    with pytest.raises(NotFoundError):
        coverage.key_coverage(rt, "nope", "k")
    with pytest.raises(NotFoundError):
        coverage.env_coverage(rt, "nope")


def test_queries_are_grouped_not_per_row(rt: Runtime) -> None:
    """The number of SQL statements does not grow with the number of rows."""
    from sqlalchemy import event

    from keyshift.stores.records import RecordStore

    w = linked_world(rt, rows=10)
    counted: list[str] = []

    def count(*args: object) -> None:
        counted.append(str(args[2]))

    event.listen(rt.engine, "before_cursor_execute", count)
    try:
        coverage.key_coverage(rt, VAULT, KEY)
        small = len(counted)
        RecordStore(rt, w["prod"]).put_many("more", [(f"m{i}", {"n": i}) for i in range(500)])
        counted.clear()
        view = coverage.key_coverage(rt, VAULT, KEY)
        assert len(counted) == small
    finally:
        event.remove(rt.engine, "before_cursor_execute", count)
    assert view["all_versions"]["totals"]["rows"] == 5 + 10 + 500
