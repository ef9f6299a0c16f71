"""The tenant admin's CMK flow by script over the REST API, on SQLite and PostgreSQL: vault, key,
policy, grant, health, managed, add environment (202 + Location + Retry-After), job, encryption
page, data still readable, remove environment; refusals leave state unchanged."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from keyshift.control import environments, tenants, tokens
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime

from .conftest import bearer


def test_add_and_remove_environment_through_the_api(client: TestClient, rt: Runtime) -> None:
    t = tenants.create_tenant(rt, "contoso")
    env = environments.create_environment(rt, t["id"], "contoso-prod", env_type="production")
    admin = bearer(tokens.create_token(rt, "tenant_admin", tenant="contoso")["token"])
    svc = bearer(tokens.create_token(rt, "service", envs=[env["id"]])["token"])

    def call(method: str, path: str, headers: dict[str, str] = admin, **kw: Any) -> Any:
        return client.request(method, f"/api/v1{path}", headers=headers, **kw)

    assert (
        call("PUT", "/environments/contoso-prod/records/t/r1", svc, json={"value": {"a": 1}}).status_code
        == 200
    )
    assert (
        call("POST", "/vaults", json={"name": "contoso-vault", "purge_protection": True}).status_code == 201
    )
    assert (
        call(
            "POST", "/vaults/contoso-vault/keys", json={"name": "cmk", "type": "RSA", "size": 2048}
        ).status_code
        == 201
    )
    pol = call(
        "POST",
        "/policies",
        json={"tenant": "contoso", "name": "cmk-eu", "region": "eu", "vault": "contoso-vault", "key": "cmk"},
    )
    assert pol.status_code == 201, pol.text
    identity = pol.json()["identity"]

    # Not healthy yet (no grant): adding is refused and nothing changes.
    assert call("POST", "/policies/cmk-eu/health").json()["health"] == "unhealthy"
    assert call("PUT", "/environments/contoso-prod/managed", json={"managed": True}).status_code == 200
    before = call("GET", "/environments/contoso-prod").json()
    refused = call("POST", "/policies/cmk-eu/environments", json={"environment": "contoso-prod"})
    assert refused.status_code == 409 and refused.json()["error"]["code"]
    assert call("GET", "/environments/contoso-prod").json() == before

    grant = {"identity": identity, "permissions": ["get", "wrapKey", "unwrapKey"]}
    assert call("POST", "/vaults/contoso-vault/keys/cmk/grants", json=grant).status_code == 200
    assert call("POST", "/policies/cmk-eu/health").json()["health"] == "healthy"
    added = call("POST", "/policies/cmk-eu/environments", json={"environment": "contoso-prod"})
    assert added.status_code == 202, added.text
    job_url = added.headers["location"]
    assert job_url == f"/api/v1/jobs/{added.json()['id']}" and int(added.headers["retry-after"]) > 0
    assert client.get(job_url, headers=admin).json()["state"] == "pending"

    Worker(rt).run_once()
    job = client.get(job_url, headers=admin).json()
    assert job["state"] == "succeeded" and job["error"] is None
    page = call("GET", "/environments/contoso-prod").json()
    assert page["encryption"]["mode"] == "cmk"
    assert page["encryption"]["managed_by"] == "customer_via_platform"
    assert page["encryption"]["managed_by_display"] == f"CustomerVia{rt.settings.platform_name}"
    assert page["encryption"]["policy"]["name"] == "cmk-eu"
    listed = call("GET", "/environments?with_policies=true").json()
    assert [e["name"] for e in listed] == ["contoso-prod"]
    assert call("GET", "/environments/contoso-prod/records/t/r1", svc).json()["value"] == {"a": 1}

    # Updating or deleting the policy is refused while linked.
    assert call("DELETE", "/policies/cmk-eu").status_code == 409
    removed = call("DELETE", "/policies/cmk-eu/environments/contoso-prod")
    assert removed.status_code == 202 and removed.headers["location"].startswith("/api/v1/jobs/")
    Worker(rt).run_once()
    assert call("GET", "/environments/contoso-prod").json()["encryption"]["mode"] == "platform"
    assert call("GET", "/environments/contoso-prod/records/t/r1", svc).json()["value"] == {"a": 1}
