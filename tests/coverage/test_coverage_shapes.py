"""The coverage and retirement reports follow the JSON conventions (docs/API.md, "Object shapes"):
vaults, environments, tenants, policies and jobs are {"id", "name"} references, the key is its name
within the vault, and no field carries a bare id (`id`/`tenant_id` beside a name)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from keycov_support import KEY, VAULT, linked_world
from sqlalchemy import select

from keyshift.api.app import create_app
from keyshift.control import coverage, tokens, vaults
from keyshift.db.models import Tenant, VaultRecord
from keyshift.runtime import Runtime

REF_KEYS = {"vault", "environment", "tenant", "policy", "job"}


def problems(value: Any, path: str = "$") -> list[str]:
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{path}.{k}"
            if (
                k in REF_KEYS
                and v is not None
                and not (isinstance(v, dict) and set(v) == {"id", "name"} and isinstance(v["id"], str))
            ):
                out.append(f"{p}: not a reference: {v!r}")
            if k == "tenants" and not all(isinstance(t, dict) and set(t) == {"id", "name"} for t in v):
                out.append(f"{p}: not a list of references: {v!r}")
            if k.endswith("_id") or k.endswith("_ids"):
                out.append(f"{p}: a bare id field")
            out += problems(v, p)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += problems(v, f"{path}[{i}]")
    return out


def test_coverage_and_retire_give_references(sqlite_rt: Runtime) -> None:
    rt = sqlite_rt
    w = linked_world(rt, rows=2, events=1, files=1)
    with rt.transaction() as s:
        vault_id = s.scalars(select(VaultRecord.id).where(VaultRecord.name == VAULT)).one()
        tenant_id = s.scalars(select(Tenant.id).where(Tenant.name == "contoso")).one()
    vault = {"id": vault_id, "name": VAULT}
    tenant = {"id": tenant_id, "name": "contoso"}
    prod = {"id": w["prod"], "name": "prod"}
    op = tokens.create_token(rt, "operator")["token"]
    with TestClient(create_app(rt)) as client:
        h = {"Authorization": f"Bearer {op}"}
        key = client.get(f"/api/v1/vaults/{VAULT}/keys/{KEY}/coverage", headers=h)
        env = client.get("/api/v1/environments/prod/coverage", headers=h)
        vaults.rotate_key(rt, VAULT, KEY)  # version 1 is no longer current: it can be retired
        retired = client.post(f"/api/v1/vaults/{VAULT}/keys/{KEY}/retire", json={"version": "1"}, headers=h)
    for r in (key, env, retired):
        assert r.status_code == 200, r.text
        assert problems(r.json()) == []
    k = key.json()
    assert k["vault"] == vault and k["key"] == KEY
    v1 = k["versions"][0]
    assert v1["tenants"] == [tenant]
    assert [(e["id"], e["name"], e["tenant"]) for e in v1["environments"]] == [(w["prod"], "prod", tenant)]
    e = env.json()
    assert e["environment"] == prod and e["tenant"] == tenant and "id" not in e
    assert e["binding"]["vault"] == vault and e["keys"][0]["vault"] == vault
    r = retired.json()
    assert r["vault"] == vault and r["coverage"]["tenants"] == [tenant]
    started = r["jobs_started"]
    assert [j["environment"] for j in started] == [prod] and started[0]["job"]["id"].startswith("job")
    # The service view (what the CLI's --json prints) is the same JSON.
    assert problems(coverage.key_coverage(rt, VAULT, KEY)) == []
    assert problems(coverage.env_coverage(rt, "prod")) == []


def test_the_check_catches_the_old_shapes() -> None:
    old = {"environment": "prod", "id": "env_1", "tenant_id": "ten_1", "tenants": ["contoso"]}
    assert len(problems(old)) == 3
