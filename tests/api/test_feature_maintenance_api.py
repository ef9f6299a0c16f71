"""The routes the CLI had before the API: lake read, search-index maintenance (list, rekey) and env
copy — same service calls, role rules, another tenant's objects as missing, refusals leave state alone."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from features.helpers import snapshot
from keyshift.control import environments
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime

from .conftest import bearer
from .test_features_api import ROWS, _ids, _indexed, _tenant


@pytest.fixture
def world(rt: Runtime) -> dict[str, Any]:
    return {"alpha": _tenant(rt, "alpha"), "beta": _tenant(rt, "beta")}


def _actions(rt: Runtime) -> set[str]:
    with rt.engine.connect() as conn:
        rows = conn.execute(
            text("select action from admin_audit where outcome = 'ok' and principal like 'token:%'")
        )
        return {row[0] for row in rows}


def test_lake_export_reads_back_over_http(client: TestClient, rt: Runtime, world: dict[str, Any]) -> None:
    a, b = world["alpha"], world["beta"]
    _indexed(client, rt, a)
    export = client.post(f"{a['base']}/lake/exports", json={"table": "accounts"}, headers=a["admin"]).json()
    url = f"{a['base']}/lake/exports/{export['path']}"
    for who in ("admin", "reader", "service"):
        r = client.get(url, headers=a[who])
        assert r.status_code == 200, f"{who}: {r.text}"
        body = r.json()
        assert body["path"] == export["path"] and body["rows"] == 3 and body["returned"] == 3
        assert {x["id"]: x["value"] for x in body["records"]} == ROWS
        assert all(x["updated_at"].endswith("Z") and x["version"] >= 1 for x in body["records"])
    one = client.get(url, params={"limit": 1}, headers=a["service"]).json()
    assert one["rows"] == 3 and one["returned"] == 1 and len(one["records"]) == 1

    before = snapshot(rt)
    missing = client.get(f"{a['base']}/lake/exports/accounts/nope.parquet", headers=a["admin"])
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "lake_file_not_found"
    bad = client.get(url, params={"limit": 0}, headers=a["admin"])
    assert bad.status_code == 422 and "limit" in bad.json()["error"]["message"]
    # Another tenant's admin, reader and service token: the environment does not exist for them.
    for who in ("admin", "reader", "service"):
        r = client.get(url.replace(a["base"], a["base"]), headers=b[who])
        assert r.status_code == 404, who
        assert r.json()["error"]["code"] == "environment_not_found"
        assert "Paris" not in r.text
    assert snapshot(rt) == before
    # A read leaves its request record (the service records no read of its own, as for the CLI).
    with rt.engine.connect() as conn:
        targets = {row[0] for row in conn.execute(text("select target_id from admin_audit"))}
    assert f"GET {url}" in targets


def test_search_indexes_listed_and_rekeyed(client: TestClient, rt: Runtime, world: dict[str, Any]) -> None:
    a, b = world["alpha"], world["beta"]
    _indexed(client, rt, a)
    url = f"{a['base']}/search-indexes"
    listed = client.get(url, headers=a["reader"])
    assert listed.status_code == 200, listed.text
    [gen] = listed.json()
    assert gen["table"] == "accounts" and gen["generation"] == 1 and gen["state"] == "active"
    assert gen["fields"] == ["name", "city"] and gen["started_at"].endswith("Z")

    before = snapshot(rt)
    for who in ("reader", "service"):
        r = client.post(f"{url}/rekey", headers=a[who])
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied", who
    assert client.get(url, headers=a["service"]).status_code == 403  # control plane
    for who in ("admin", "reader"):
        assert client.post(f"{url}/rekey", headers=b[who]).status_code in (403, 404)
        assert client.get(url, headers=b[who]).json()["error"]["code"] == "environment_not_found"
    assert snapshot(rt) == before

    r = client.post(f"{url}/rekey", headers=a["admin"])
    assert r.status_code == 202, r.text
    assert r.headers["retry-after"] == "2"
    [new] = r.json()
    assert new["table"] == "accounts" and new["generation"] == 2 and new["state"] == "building"
    assert new["job"] and new["fields"] == ["name", "city"]
    assert Worker(rt).run_job(new["job"]) == "succeeded"
    gens = client.get(url, headers=a["admin"]).json()
    assert [(g["generation"], g["state"]) for g in gens] == [(2, "active")]
    assert _ids(client.get(f"{a['base']}/tables/accounts/search?q=paris", headers=a["service"])) == [
        "a1",
        "a2",
    ]
    assert "search.rekey.requested" in _actions(rt)


def test_env_copy_over_http(
    client: TestClient, rt: Runtime, world: dict[str, Any], operator_token: str
) -> None:
    a, b = world["alpha"], world["beta"]
    _indexed(client, rt, a)
    dev = environments.create_environment(rt, a["env"]["tenant"]["id"], "alpha-dev", env_type="sandbox")
    url = f"/api/v1/environments/{dev['name']}/copy"
    body = {"source": a["env"]["name"]}

    before = snapshot(rt)
    for who in ("reader", "service"):
        r = client.post(url, json=body, headers=a[who])
        assert r.status_code == 403, who
    # Beta's admin can name neither alpha's destination nor alpha's source.
    r = client.post(url, json=body, headers=b["admin"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "environment_not_found"
    r = client.post(url, json={"source": b["env"]["name"]}, headers=a["admin"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "environment_not_found"
    unknown = client.post(url, json={"source": "no-such-env"}, headers=a["admin"])
    assert r.json()["error"]["message"] == unknown.json()["error"]["message"].replace(
        "no-such-env", "beta-prod"
    )
    assert b["env"]["id"] not in r.text
    same = client.post(url, json={"source": dev["name"]}, headers=a["admin"])
    assert same.status_code == 409 and same.json()["error"]["code"] == "same_environment"
    # The operator may name both, and the service refuses a copy across tenants.
    cross = client.post(url, json={"source": b["env"]["name"]}, headers=bearer(operator_token))
    assert cross.status_code == 409 and cross.json()["error"]["code"] == "different_tenant"
    wrong = client.post(url, json={"source": 5}, headers=a["admin"])
    assert wrong.status_code == 422 and wrong.json()["error"]["message"].startswith("source")
    assert snapshot(rt) == before

    r = client.post(url, json=body, headers=a["admin"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["environment"] == {"id": dev["id"], "name": "alpha-dev"}
    assert out["source"] == {"id": a["env"]["id"], "name": "alpha-prod"}
    assert out["backup"].startswith("bak") and out["restored"]["records"] == 3
    tok = bearer(_service_token(rt, dev["id"]))
    got = client.get(f"{url.removesuffix('/copy')}/records/accounts/a2", headers=tok)
    assert got.status_code == 200 and got.json()["value"] == ROWS["a2"]
    assert "environment.copy" in _actions(rt)


def _service_token(rt: Runtime, env_id: str) -> str:
    from keyshift.control import tokens

    return str(tokens.create_token(rt, "service", envs=[env_id])["token"])
