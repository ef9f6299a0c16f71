"""One JSON shape per object: `env list` and `env show` share the `encryption` shape; a vault's
tenant and a job's environment/tenant/policy are {id, name} references in the CLI and the API;
timestamps are ISO 8601 UTC with Z in both."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cli_vault_support import VaultCli
from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.control import tokens
from keyshift.runtime import Runtime

Z_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _times(value: Any, key: str = "") -> list[str]:
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _times(v, k)]
    if isinstance(value, list):
        return [t for v in value for t in _times(v, key)]
    if isinstance(value, str) and (key == "at" or key.endswith("_at") or key.endswith("_after")):
        return [value]
    return []


def test_cli_shapes_and_times(tmp_path: Path, db_url: str | None) -> None:
    cli = VaultCli(tmp_path / "home", db_url)
    cli("init")
    tenant = cli("tenant", "create", "contoso")
    shown = cli("env", "create", "contoso", "contoso-prod", "--type", "production")
    listed = cli("env", "list")
    assert [e["name"] for e in listed] == ["contoso-prod"]
    assert listed[0]["encryption"] == shown["encryption"]
    assert (listed[0]["tenant"], listed[0]["tenant_id"]) == (shown["tenant"], shown["tenant_id"])
    vault = cli("vault", "create", "contoso-kv", "--tenant", "contoso")
    assert vault["tenant"] == {"id": tenant["id"], "name": "contoso"}
    assert [v["tenant"] for v in cli("vault", "list") if v["name"] == "contoso-kv"] == [vault["tenant"]]
    added = cli(
        "vault", "add", "contoso-kms", "--kind", "aws-kms", "--region", "eu-west-1", "--tenant", "contoso"
    )  # registering contacts nothing
    assert added["tenant"] == vault["tenant"] == cli("vault", "show", "contoso-kms")["tenant"]
    cli("vault", "update", "contoso-kv", "--purge-protection")
    cli("key", "create", "contoso-kv", "cmk", "--type", "RSA", "--size", "2048")
    policy = cli(
        "policy", "create", "contoso", "pol", "--region", "eu", "--vault", "contoso-kv", "--key", "cmk"
    )
    grant = ("--identity", policy["identity"], "--permissions", "get,wrapKey,unwrapKey")
    cli("key", "grant", "contoso-kv", "cmk", *grant)
    cli("env", "managed", "enable", "contoso-prod")
    cli("policy", "health", "pol")
    started = cli("policy", "add-env", "pol", "contoso-prod")
    job = cli("job", "show", started["id"])
    assert job["environment"] == {"id": shown["id"], "name": "contoso-prod"}
    assert job["tenant"] == {"id": tenant["id"], "name": "contoso"}
    assert job["policy"] == {"id": policy["id"], "name": "pol"}
    assert cli("job", "list")[0]["environment"] == job["environment"]
    stamps = _times(shown) + _times(vault) + _times(cli("audit-trail")) + _times(job)
    assert stamps and all(Z_TIME.match(t) for t in stamps), stamps


def test_api_shapes_and_times(rt: Runtime) -> None:
    from keyshift.control import environments, tenants, vaults

    t = tenants.create_tenant(rt, "contoso")
    environments.create_environment(rt, "contoso", "contoso-prod")
    vaults.create_local_vault(rt, "contoso-kv", tenant_id=t["id"])
    token = str(tokens.create_token(rt, "operator", label="shapes")["token"])
    with TestClient(create_app(rt)) as client:
        h = {"Authorization": f"Bearer {token}"}
        env = client.get("/api/v1/environments/contoso-prod", headers=h).json()
        listed = client.get("/api/v1/environments", headers=h).json()
        vlist = client.get("/api/v1/vaults", headers=h).json()
        trail = client.get("/api/v1/audit-trail", headers=h).json()
    assert listed[0]["encryption"] == env["encryption"]
    assert [v["tenant"] for v in vlist if v["name"] == "contoso-kv"] == [{"id": t["id"], "name": "contoso"}]
    stamps = _times(env) + _times(vlist) + _times(trail)
    assert stamps and all(Z_TIME.match(s) for s in stamps), stamps
