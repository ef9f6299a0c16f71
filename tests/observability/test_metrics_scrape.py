"""A real scrape of `/metrics` (parsed by prometheus_client.parser) after a scripted workload: every
counter moves by exactly what the workload did."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.control import tokens, vaults
from keyshift.control.monitor import monitor_once
from keyshift.control.revocation import reenable_environment
from keyshift.runtime import Runtime
from keyshift.stores.keys import flush
from revocation.helpers import KEY, VAULT, cmk_world

from .support import delta, scrape, value

RECORD_ROUTE = "/api/v1/environments/{env}/records/{table}/{record_id}"


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        yield c


def _token(rt: Runtime, role: str, **kw: Any) -> str:
    return str(tokens.create_token(rt, role, **kw)["token"])


def test_scrape_after_a_scripted_workload(rt: Runtime, client: TestClient) -> None:
    world = cmk_world(rt, rows=5)
    eid = world.envs["contoso-prod"]
    op = _token(rt, "operator")
    svc = _token(rt, "service", tenant="contoso", envs=[eid])
    auth = {"Authorization": f"Bearer {svc}"}
    before = scrape(client, op)
    assert value(before, "keyshift_state_up") == 1
    assert value(before, "keyshift_environments", state="enabled", mode="cmk") == 1
    assert value(before, "keyshift_policy_health", policy=world.policy, status="healthy") == 1
    assert value(before, "keyshift_jobs", kind="link", state="succeeded") == 1

    # 1. Two reads of one record after the cache was flushed: one miss (one unwrap), one hit.
    flush(rt, eid)
    for _ in range(2):
        r = client.get(f"/api/v1/environments/{eid}/records/t/r00001", headers=auth)
        assert r.status_code == 200 and r.json()["value"] == {"n": 1, "p": "r"}
    # 2. A read of a record that does not exist, a write.
    assert client.get(f"/api/v1/environments/{eid}/records/t/nope", headers=auth).status_code == 404
    r = client.put(f"/api/v1/environments/{eid}/records/t/new", headers=auth, json={"value": {"a": 1}})
    assert r.status_code == 200, r.text
    mid = scrape(client, op)
    assert (
        delta(
            before, mid, "keyshift_data_requests_total", store="records", operation="get_record", outcome="ok"
        )
        == 2
    )
    assert (
        delta(
            before,
            mid,
            "keyshift_data_requests_total",
            store="records",
            operation="get_record",
            outcome="not_found",
        )
        == 1
    )
    assert (
        delta(before, mid, "keyshift_data_requests_total", store="records", operation="put", outcome="ok")
        == 1
    )
    assert (
        delta(before, mid, "keyshift_data_request_seconds_count", store="records", operation="get_record")
        == 3
    )
    assert delta(before, mid, "keyshift_dek_cache_misses_total") == 1
    assert delta(before, mid, "keyshift_dek_cache_hits_total") == 2  # the second read, then the write
    assert (
        delta(before, mid, "keyshift_vault_calls_total", kind="local", operation="unwrap", outcome="ok") == 1
    )
    assert (
        delta(
            before, mid, "keyshift_vault_call_seconds_count", kind="local", operation="unwrap", outcome="ok"
        )
        == 1
    )
    assert (
        delta(before, mid, "keyshift_http_requests_total", method="GET", route=RECORD_ROUTE, status="200")
        == 2
    )
    assert (
        delta(before, mid, "keyshift_http_requests_total", method="GET", route=RECORD_ROUTE, status="404")
        == 1
    )

    # 3. The customer removes the grant: the monitor finds the policy unhealthy, disables the env.
    vaults.revoke_key_grant(rt, VAULT, KEY, world.identity, force=True)
    out = monitor_once(rt)[world.policy]
    assert out["environments_disabled"] == [eid]
    r = client.get(f"/api/v1/environments/{eid}/records/t/r00001", headers=auth)
    assert r.status_code == 423, r.text  # environment disabled (exit 7)
    after_revoke = scrape(client, op)
    assert delta(mid, after_revoke, "keyshift_revocations_total", source="monitor") == 1
    assert delta(mid, after_revoke, "keyshift_deletions_scheduled_total") == 1
    assert delta(mid, after_revoke, "keyshift_dek_cache_flushed_total") == 1  # the one DEK read above
    assert delta(mid, after_revoke, "keyshift_policy_health_results_total", status="unhealthy") == 1
    assert (
        delta(
            mid, after_revoke, "keyshift_vault_calls_total", kind="local", operation="wrap", outcome="refused"
        )
        >= 1
    )
    assert (
        delta(
            mid,
            after_revoke,
            "keyshift_data_requests_total",
            store="records",
            operation="get_record",
            outcome="unavailable",
        )
        == 1
    )
    assert value(after_revoke, "keyshift_environments", state="disabled", mode="cmk") == 1
    assert value(after_revoke, "keyshift_environments", state="enabled", mode="cmk") == 0
    assert value(after_revoke, "keyshift_policy_health", policy=world.policy, status="unhealthy") == 1
    assert value(after_revoke, "keyshift_policy_health", policy=world.policy, status="healthy") == 0

    # 4. Access restored, an admin re-enables.
    vaults.grant_key(rt, VAULT, KEY, world.identity, "get,wrapKey,unwrapKey")
    reenable_environment(rt, eid)
    end = scrape(client, op)
    assert delta(after_revoke, end, "keyshift_reenables_total") == 1
    assert value(end, "keyshift_environments", state="enabled", mode="cmk") == 1


def test_metrics_need_an_operator_token(rt: Runtime, client: TestClient) -> None:
    cmk_world(rt, rows=0)
    resp = client.get("/metrics")
    assert resp.status_code == 401 and "keyshift_" not in resp.text
    for role, kw in (("tenant_admin", {"tenant": "contoso"}), ("reader", {})):
        resp = client.get("/metrics", headers={"Authorization": f"Bearer {_token(rt, role, **kw)}"})
        assert resp.status_code == 403 and "keyshift_" not in resp.text, role
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {_token(rt, 'operator')}"})
    assert resp.status_code == 200 and "keyshift_environments" in resp.text
