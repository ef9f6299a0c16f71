"""A client generated from the OpenAPI document with `openapi-python-client` (at test time, into a
temporary folder) runs the BYOK -> CMK procedure end to end against a live server (Uvicorn in a
thread): a legacy BYOK tenant's environment, vault + key, grant, policy, managed, add to the policy,
the job to success, and the environment's encryption page showing cmk.

Responses of routes whose response types are still untyped are read through the generated client's
raw `sync_detailed(...).content`; the calls themselves (paths, bodies, operation ids) are generated.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from features.helpers import make_env
from keyshift.api.app import create_app
from keyshift.control import tokens
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime

# `make test` installs the generator into its own venv (.venv-tools): its pins differ from ours.
_REPO = Path(__file__).resolve().parents[2]
GENERATOR = next(
    (
        str(p)
        for p in (
            Path(os.environ.get("KEYSHIFT_OPENAPI_GENERATOR", "/nonexistent")),
            _REPO / ".venv-tools" / "bin" / "openapi-python-client",
            Path(sys.executable).parent / "openapi-python-client",
        )
        if p.exists()
    ),
    shutil.which("openapi-python-client") or "openapi-python-client",
)


@pytest.fixture
def live(rt: Runtime) -> Iterator[tuple[str, Any]]:
    import uvicorn

    app = create_app(rt, with_web=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=10)


def _generate(app: Any, where: Path) -> Any:
    if not Path(GENERATOR).exists():
        pytest.skip("openapi-python-client is not installed (`make test` puts it in .venv-tools)")
    spec = where / "openapi.json"
    spec.write_text(json.dumps(app.openapi()))
    out = where / "keyshift_api_client"
    done = subprocess.run(
        [GENERATOR, "generate", "--path", str(spec), "--output-path", str(out), "--meta", "none"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module("keyshift_api_client")
    finally:
        sys.path.remove(str(where))


def _op(pkg: Any, tag: str, operation_id: str) -> Any:
    return importlib.import_module(f"{pkg.__name__}.api.{tag}.{operation_id}")


def _json(resp: Any, status: int) -> Any:
    assert resp.status_code == status, resp.content[:500]
    return json.loads(resp.content)


def test_generated_client_runs_byok_to_cmk(live: tuple[str, Any], rt: Runtime, tmp_path: Path) -> None:
    url, app = live
    pkg = _generate(app, tmp_path)
    models = importlib.import_module(f"{pkg.__name__}.models")
    make_env(rt, "contoso-prod", tenant="contoso", byok=True)  # a legacy BYOK tenant's environment
    token = tokens.create_token(rt, "tenant_admin", tenant="contoso")["token"]
    client = pkg.AuthenticatedClient(base_url=url, token=token)
    vk = "vaults_and_keys"

    tenant = _json(_op(pkg, "tenants", "tenants_get").sync_detailed("contoso", client=client), 200)
    assert tenant["byok_feature"] is True
    r = _op(pkg, vk, "vaults_create").sync_detailed(
        client=client, body=models.VaultCreateForTenant(name="contoso-vault", purge_protection=True)
    )
    assert _json(r, 201)["name"] == "contoso-vault"
    key = models.RsaKeyCreate(name="cmk", type_="RSA", size=models.RsaKeyCreateSize(2048))
    assert (
        _op(pkg, vk, "keys_create").sync_detailed("contoso-vault", client=client, body=key).status_code == 201
    )
    policy = _json(
        _op(pkg, "policies", "policies_create").sync_detailed(
            client=client,
            body=models.PolicyCreate(
                tenant="contoso",
                name="cmk-eu",
                region=models.PolicyCreateRegion("eu"),
                vault="contoso-vault",
                key="cmk",
            ),
        ),
        201,
    )
    grant = models.GrantCreate(
        identity=policy["identity"],
        permissions=[models.GrantCreatePermissionsItem(p) for p in ("get", "wrapKey", "unwrapKey")],
    )
    assert (
        _op(pkg, vk, "keys_grant")
        .sync_detailed("contoso-vault", "cmk", client=client, body=grant)
        .status_code
        == 200
    )
    health = _op(pkg, "policies", "policies_check_health").sync_detailed("cmk-eu", client=client)
    assert _json(health, 200)["health"] == "healthy"
    managed = _op(pkg, "environments", "environments_set_managed").sync_detailed(
        "contoso-prod", client=client, body=models.ManagedUpdate(managed=True)
    )
    assert managed.status_code == 200
    # The operator turns the tenant's legacy BYOK feature off (the ticket of the procedure).
    operator = pkg.AuthenticatedClient(base_url=url, token=tokens.create_token(rt, "operator")["token"])
    flag = _op(pkg, "tenants", "tenants_byok_flag_remove").sync_detailed(
        "contoso", client=operator, body=models.ByokFlagRemove(ticket="OPS-1")
    )
    assert flag.status_code == 200, flag.content
    Worker(rt).run_once()  # the BYOK environment's move off the legacy key
    added = _op(pkg, "policies", "policies_add_environment").sync_detailed(
        "cmk-eu", client=client, body=models.PolicyEnvironment(environment="contoso-prod")
    )
    job = _json(added, 202)
    assert added.headers["location"] == f"/api/v1/jobs/{job['id']}" and int(added.headers["retry-after"]) > 0

    assert Worker(rt).run_job(job["id"]) == "succeeded"
    shown = _json(_op(pkg, "jobs", "jobs_get").sync_detailed(job["id"], client=client), 200)
    assert shown["state"] == "succeeded" and shown["error"] is None
    page = _json(
        _op(pkg, "environments", "environments_get").sync_detailed("contoso-prod", client=client), 200
    )
    assert page["encryption"]["mode"] == "cmk" and page["encryption"]["managed_by"] == "customer_via_platform"
    listed = _op(pkg, "environments", "environments_list").sync_detailed(client=client, with_policies=True)
    assert [e["name"] for e in _json(listed, 200)] == ["contoso-prod"]
