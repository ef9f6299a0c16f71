"""Search, data lake and backups over HTTP: the same services as the CLI, the role rules of the
feature routes, the SQL-restriction refusal and another tenant's objects answering as missing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from features.helpers import make_env, snapshot
from keyshift.control import environments, tenants, tokens
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime

from .conftest import bearer

FEATURES = ("search", "data-lake", "long-term-retention")
ROWS = {
    "a1": {"name": "Fabrikam Inc", "city": "Paris"},
    "a2": {"name": "Contoso Ltd", "city": "Paris"},
    "a3": {"name": "Northwind Traders", "city": "Oslo"},
}


def _tenant(rt: Runtime, name: str) -> dict[str, Any]:
    t = tenants.create_tenant(rt, name)
    env = environments.create_environment(rt, t["id"], f"{name}-prod", env_type="production")
    for feature in FEATURES:
        environments.enable_feature(rt, env["id"], feature)

    def tok(role: str, **kw: Any) -> dict[str, str]:
        return bearer(tokens.create_token(rt, role, **kw)["token"])

    return {
        "env": env,
        "base": f"/api/v1/environments/{env['name']}",
        "admin": tok("tenant_admin", tenant=name),
        "reader": tok("reader", tenant=name),
        "service": tok("service", envs=[env["id"]]),
    }


@pytest.fixture
def world(rt: Runtime) -> dict[str, Any]:
    return {"alpha": _tenant(rt, "alpha"), "beta": _tenant(rt, "beta")}


def _put_rows(client: TestClient, side: dict[str, Any]) -> None:
    for rid, value in ROWS.items():
        r = client.put(
            f"{side['base']}/records/accounts/{rid}", json={"value": value}, headers=side["service"]
        )
        assert r.status_code == 200, r.text


def _indexed(client: TestClient, rt: Runtime, side: dict[str, Any]) -> None:
    _put_rows(client, side)
    r = client.put(
        f"{side['base']}/tables/accounts/search-fields",
        json={"fields": ["name", "city"]},
        headers=side["admin"],
    )
    assert r.status_code == 202, r.text
    view = r.json()
    assert r.headers["location"] == f"/api/v1/jobs/{view['job']}" and r.headers["retry-after"]
    assert view["table"] == "accounts" and view["fields"] == ["name", "city"] and view["job"]
    assert Worker(rt).run_job(view["job"]) == "succeeded"


def _ids(resp: Any) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [r["id"] for r in resp.json()["results"]]


def test_search_lake_and_backup_round_trip(client: TestClient, rt: Runtime, world: dict[str, Any]) -> None:
    a = world["alpha"]
    base = a["base"]
    _indexed(client, rt, a)
    # Service tokens of the environment, and its tenant's readers and admins, may search.
    for who in ("service", "reader", "admin"):
        assert _ids(client.get(f"{base}/tables/accounts/search?q=paris", headers=a[who])) == ["a1", "a2"]
    found = client.get(f"{base}/tables/accounts/search", params={"q": "PARIS contoso"}, headers=a["service"])
    assert _ids(found) == ["a2"] and found.json()["results"][0]["value"] == ROWS["a2"]
    assert _ids(client.get(f"{base}/tables/accounts/search?q=paris&limit=1", headers=a["service"])) == ["a1"]

    # Data lake: export, list, and the export reads back through the same service.
    r = client.post(f"{base}/lake/exports", json={"table": "accounts"}, headers=a["admin"])
    assert r.status_code == 201, r.text
    export = r.json()
    assert export["table"] == "accounts" and export["rows"] == 3 and export["size"] > 0
    listed = client.get(f"{base}/lake/exports", headers=a["reader"])
    assert listed.status_code == 200 and [x["path"] for x in listed.json()] == [export["path"]]
    from keyshift.features.lake import read_export

    back = read_export(rt, a["env"]["id"], export["path"])
    assert {x["id"]: x["value"] for x in back["records"]} == ROWS

    # Backups: take one, change the data, restore it.
    r = client.post(
        f"{base}/backups", json={"note": "before change", "retention_days": 7}, headers=a["admin"]
    )
    assert r.status_code == 201, r.text
    backup = r.json()
    assert backup["state"] == "ready" and backup["counts"]["records"] == 3
    assert client.post(f"{base}/backups", headers=a["admin"]).status_code == 201  # body is optional
    listed = client.get(f"{base}/backups", headers=a["reader"])
    assert listed.status_code == 200 and backup["id"] in [x["id"] for x in listed.json()]
    h = a["service"]
    assert client.put(
        f"{base}/records/accounts/a1", json={"value": {"name": "changed"}}, headers=h
    ).is_success
    assert client.delete(f"{base}/records/accounts/a3", headers=h).is_success
    r = client.post(f"{base}/backups/{backup['id']}/restore", headers=a["admin"])
    assert r.status_code == 200, r.text
    assert r.json()["backup"] == backup["id"]
    assert client.get(f"{base}/records/accounts/a1", headers=h).json()["value"] == ROWS["a1"]
    assert client.get(f"{base}/records/accounts/a3", headers=h).json()["value"] == ROWS["a3"]
    assert _ids(client.get(f"{base}/tables/accounts/search?q=oslo", headers=h)) == ["a3"]
    # Every action left an admin audit record naming the caller's token.
    with rt.engine.connect() as conn:
        actions = {
            row[0]
            for row in conn.execute(
                text("select action from admin_audit where outcome = 'ok' and principal like 'token:%'")
            )
        }
    assert {"search.fields", "lake.export", "environment.backup", "environment.restore_backup"} <= actions


def test_roles_of_the_feature_routes(client: TestClient, rt: Runtime, world: dict[str, Any]) -> None:
    a = world["alpha"]
    base = a["base"]
    _indexed(client, rt, a)
    backup = client.post(f"{base}/backups", headers=a["admin"]).json()["id"]
    before = snapshot(rt)
    writes = [
        ("PUT", f"{base}/tables/accounts/search-fields", {"fields": ["city"]}),
        ("POST", f"{base}/lake/exports", {"table": "accounts"}),
        ("POST", f"{base}/backups", None),
        ("POST", f"{base}/backups/{backup}/restore", None),
    ]
    for who in ("service", "reader"):
        for method, url, body in writes:
            r = client.request(method, url, json=body, headers=a[who])
            assert r.status_code == 403, f"{who} {method} {url} -> {r.status_code}"
            assert r.json()["error"]["code"] == "permission_denied"
    # Service tokens search only: listing lake exports or backups is control plane.
    for url in (f"{base}/lake/exports", f"{base}/backups"):
        assert client.get(url, headers=a["service"]).status_code == 403
    assert snapshot(rt) == before


def test_another_tenants_environment_and_backup_answer_as_missing(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    a, b = world["alpha"], world["beta"]
    _indexed(client, rt, b)
    beta_backup = client.post(f"{b['base']}/backups", headers=b["admin"]).json()["id"]
    before = snapshot(rt)
    missing = client.get("/api/v1/environments/no-such-env/backups", headers=a["admin"]).json()
    calls = [
        ("GET", "/tables/accounts/search?q=paris", None),
        ("PUT", "/tables/accounts/search-fields", {"fields": ["name"]}),
        ("POST", "/lake/exports", {"table": "accounts"}),
        ("GET", "/lake/exports", None),
        ("POST", "/backups", None),
        ("GET", "/backups", None),
        ("POST", f"/backups/{beta_backup}/restore", None),
    ]
    for who in ("admin", "reader", "service"):
        for method, suffix, body in calls:
            r = client.request(method, b["base"] + suffix, json=body, headers=a[who])
            # The guard refuses a role before it looks anything up (403); otherwise: as missing.
            assert r.status_code in (403, 404), f"{who} {method} {suffix} -> {r.status_code}"
            if r.status_code == 404:
                assert r.json()["error"]["code"] == missing["error"]["code"] == "environment_not_found"
                assert b["env"]["id"] not in r.text
    # Beta's backup id named on alpha's own environment answers exactly like an unknown id.
    r = client.post(f"{a['base']}/backups/{beta_backup}/restore", headers=a["admin"])
    unknown = client.post(f"{a['base']}/backups/bak_unknown/restore", headers=a["admin"])
    assert r.status_code == unknown.status_code == 404
    assert r.json()["error"]["code"] == unknown.json()["error"]["code"] == "backup_not_found"
    assert b["env"]["id"] not in r.text and "beta" not in r.text
    assert snapshot(rt) == before
    # Beta still finds its own data.
    assert _ids(client.get(f"{b['base']}/tables/accounts/search?q=paris", headers=b["service"])) == [
        "a1",
        "a2",
    ]


def test_sql_restricted_environment_is_refused_and_unchanged(
    client: TestClient, rt: Runtime, operator_token: str
) -> None:
    make_env(rt, "legacy-prod", tenant="legacy", byok=True)  # legacy BYOK: every feature listed, SQL only
    h = bearer(operator_token)
    base = "/api/v1/environments/legacy-prod"
    before = snapshot(rt)
    calls = [
        ("PUT", "/tables/accounts/search-fields", {"fields": ["name"]}),
        ("GET", "/tables/accounts/search?q=paris", None),
        ("POST", "/lake/exports", {"table": "accounts"}),
        ("GET", "/lake/exports", None),
        ("POST", "/backups", None),
    ]
    for method, suffix, body in calls:
        r = client.request(method, base + suffix, json=body, headers=h)
        assert r.status_code == 409, f"{method} {suffix} -> {r.status_code} {r.text}"
        err = r.json()["error"]
        assert err["code"] == "sql_restriction" and "SQL restriction" in err["message"]
    assert snapshot(rt) == before
    with rt.engine.connect() as conn:
        refusals = conn.execute(
            text(
                "select count(*) from admin_audit where outcome = 'error' and reason like 'sql_restriction%'"
            )
        ).scalar_one()
    assert refusals >= len(calls)


def test_bad_input_is_refused_and_changes_nothing(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    a = world["alpha"]
    base = a["base"]
    _indexed(client, rt, a)
    before = snapshot(rt)
    bad = [
        ("GET", "/tables/accounts/search?q=paris&limit=0", None, 422),
        ("GET", "/tables/accounts/search?q=paris&limit=1001", None, 422),
        ("GET", "/tables/accounts/search", None, 422),
        ("GET", "/tables/accounts/search?q=%20%20", None, 400),
        ("GET", "/tables/nosuch/search?q=paris", None, 409),
        ("PUT", "/tables/accounts/search-fields", {"fields": []}, 422),
        ("PUT", "/tables/accounts/search-fields", {"fields": ["name"], "extra": 1}, 422),
        ("PUT", "/tables/..%2Fetc/search-fields", {"fields": ["name"]}, None),
        ("POST", "/lake/exports", {"table": "nosuch"}, 404),
        ("POST", "/lake/exports", {}, 422),
        ("POST", "/backups", {"retention_days": 0}, 422),
        ("POST", "/backups", {"note": "x" * 501}, 422),
        ("POST", "/backups/bak_unknown/restore", None, 404),
    ]
    for method, suffix, body, status in bad:
        r = client.request(method, base + suffix, json=body, headers=a["admin"])
        if status is None:
            assert 400 <= r.status_code < 500, f"{method} {suffix} -> {r.status_code}"
        else:
            assert r.status_code == status, f"{method} {suffix} -> {r.status_code} {r.text}"
        assert set(r.json()["error"]) >= {"code", "message"}
        assert snapshot(rt) == before, f"{method} {suffix} changed state"
