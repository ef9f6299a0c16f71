"""Coverage and the retirement gate with the customer key in a real external vault: SoftHSM2
(pkcs11), the PyKMIP server (kmip) and moto's KMS (aws-kms). Each skips with a reason when its
server cannot run here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from keycov_support import Cli, audit, brute_force, live_deks, run

from keyshift.clock import FixedClock
from keyshift.control import coverage, environments, policies, tenants, vaults
from keyshift.control.health import check_policy
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.audit import AuditLog
from keyshift.stores.files import FileStore
from keyshift.stores.records import RecordStore
from keyshift.vaults.external import add_external_vault
from servers import aws_test_env, kmip_server, moto_endpoint, softhsm_token  # noqa: F401 - fixtures

PIN_VAR = "KS_COVERAGE_TEST_PIN"


def _register(request: pytest.FixtureRequest, rt: Runtime, kind: str) -> tuple[str, str, int]:
    if kind == "pkcs11":
        tok = request.getfixturevalue("softhsm_token")
        os.environ[PIN_VAR] = tok.pin
        cfg: dict[str, Any] = {"module": tok.module, "token_label": tok.label, "pin": {"env": PIN_VAR}}
        key = ("RSA", f"cov-{os.urandom(3).hex()}", 2048)
    elif kind == "kmip":
        srv = request.getfixturevalue("kmip_server")
        cfg = {"host": srv.host, "port": srv.port, "cert": str(srv.pki.client_cert),
               "key": str(srv.pki.client_key), "ca": str(srv.pki.ca)}  # fmt: skip
        key = ("AES", f"cov-{os.urandom(3).hex()}", 256)
    else:
        request.getfixturevalue("aws_test_env")
        cfg = {"endpoint_url": request.getfixturevalue("moto_endpoint"), "region": "us-east-1"}
        key = ("AES", f"cov-{os.urandom(3).hex()}", 256)
    add_external_vault(rt, "cust-ext", kind, cfg, soft_delete_days=30, purge_protection=True)
    return key


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["pkcs11", "kmip", "aws-kms"])
def test_external_key_coverage_and_gate(
    request: pytest.FixtureRequest, sqlite_rt: Runtime, clock: FixedClock, tmp_path: Path, kind: str
) -> None:
    rt = sqlite_rt
    key_type, key, size = _register(request, rt, kind)
    tenants.create_tenant(rt, "contoso")
    env = environments.create_environment(rt, "contoso", "prod", env_type="production")["id"]
    environments.set_managed(rt, "prod", True)
    vaults.create_key(rt, "cust-ext", key, key_type, size)
    pol = policies.create_policy(
        rt, "contoso", "ext-pol", region=rt.settings.default_region, vault="cust-ext", key=key
    )
    assert check_policy(rt, pol["id"]).status == "healthy"
    assert run(rt, start_link(rt, "ext-pol", "prod")["id"]) == "succeeded"
    RecordStore(rt, env).put_many("t", [(f"r{i}", {"n": i}) for i in range(25)])
    AuditLog(rt, env).append({"who": "alice"})
    FileStore(rt, env).put("a/b.bin", os.urandom(3000))

    view = coverage.key_coverage(rt, "cust-ext", key)
    expected = brute_force(rt, set(live_deks(rt, "cust-ext", key)))
    totals = view["all_versions"]["totals"]
    assert (totals["rows"], totals["events"], totals["files"]) == (25, 1, 1)
    for k in ("rows", "row_bytes", "events", "event_bytes", "files"):
        assert totals[k] == expected.get(k, 0), k

    cli = Cli(rt.home.path, None, clock)
    err = cli("key", "disable", "cust-ext", key, code=4)
    assert err["code"] == "key_in_use" and "prod" in err["message"]
    assert vaults.show_key(rt, "cust-ext", key)["enabled"] is True  # the vault was not asked
    assert audit(rt, "key.disable")[-1][0] == "error"
    assert cli("key", "disable", "cust-ext", key, "--force")["enabled"] is False
    assert vaults.show_key(rt, "cust-ext", key)["enabled"] is False
    assert audit(rt, "key.disable.forced")[0][3]["environments"] == ["prod"]
