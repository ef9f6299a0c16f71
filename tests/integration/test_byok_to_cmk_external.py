"""The full BYOK -> CMK migration with the customer key in a real external vault: an RSA-2048 key
in SoftHSM2 (pkcs11), an AES-256 key on the PyKMIP server (kmip) and in moto's KMS (aws-kms).

Every row, audit event and file written under BYOK reads back unchanged under the CMK; the DEKs'
current wraps name the external vault; the vault is called per DEK, not per row; and when the
customer disables the key in their vault, the policy turns unhealthy and the environment is
disabled on its next read (fail closed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from keyshift.control import policies, tenants, vaults
from keyshift.control.health import check_policy
from keyshift.errors import EnvironmentUnavailableError, KeyInaccessibleError
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys
from keyshift.stores.records import RecordStore
from keyshift.vaults.external import add_external_vault
from keyshift.vaults.faults import FaultyVault
from migrate.helpers import byok_world, env_row, fill, job, read_all, run, wraps
from servers import aws_test_env, kmip_server, moto_endpoint, softhsm_token  # noqa: F401 - fixtures

PIN_VAR = "KS_MIGRATION_TEST_PIN"


def _register(request: pytest.FixtureRequest, rt: Runtime, kind: str) -> tuple[str, str, int]:
    """Register the external vault; return (key type, key name, size) to create in it."""
    if kind == "pkcs11":
        tok = request.getfixturevalue("softhsm_token")
        os.environ[PIN_VAR] = tok.pin
        cfg: dict[str, Any] = {"module": tok.module, "token_label": tok.label, "pin": {"env": PIN_VAR}}
        key = ("RSA", f"cmk-{os.urandom(3).hex()}", 2048)
    elif kind == "kmip":
        srv = request.getfixturevalue("kmip_server")
        cfg = {"host": srv.host, "port": srv.port, "cert": str(srv.pki.client_cert),
               "key": str(srv.pki.client_key), "ca": str(srv.pki.ca)}  # fmt: skip
        key = ("AES", f"cmk-{os.urandom(3).hex()}", 256)
    else:
        request.getfixturevalue("aws_test_env")
        cfg = {"endpoint_url": request.getfixturevalue("moto_endpoint"), "region": "us-east-1"}
        key = ("AES", f"cmk-{os.urandom(3).hex()}", 256)
    add_external_vault(rt, "cust-ext", kind, cfg, soft_delete_days=30, purge_protection=True)
    return key


@pytest.mark.parametrize("kind", ["pkcs11", "kmip", "aws-kms"])
def test_byok_to_cmk_with_the_cmk_in_an_external_vault(
    request: pytest.FixtureRequest, sqlite_rt: Runtime, tmp_path: Path, kind: str
) -> None:
    rt = sqlite_rt
    world = byok_world(rt, tmp_path)
    env_id = world["envs"]["fab-prod"]
    written = fill(rt, env_id, rows=60, events=15, files=3)
    key_type, key_name, size = _register(request, rt, kind)
    vaults.create_key(rt, "cust-ext", key_name, key_type, size)
    pol = policies.create_policy(
        rt, "fabrikam", "fab-ext-pol", region=rt.settings.default_region, vault="cust-ext", key=key_name
    )
    report = check_policy(rt, pol["id"])
    assert report.status == "healthy", report.reasons

    # Count what the migration asks of the external vault (FaultyVault with no faults = a counter).
    counter = FaultyVault(rt.vault("cust-ext"))
    ext_id = str(vaults.show_vault(rt, "cust-ext")["id"])
    rt._vaults["cust-ext"] = rt._vaults[ext_id] = counter

    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-77")
    view = start_link(rt, "fab-ext-pol", "fab-prod")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])

    env = env_row(rt, "fab-prod")
    assert (env.enc_mode, env.enc_managed_by, env.kek_vault_id) == ("cmk", "customer_via_platform", ext_id)
    current = [w for w in wraps(rt, env_id) if w[1] == "current"]
    assert current and all(w[2] == ext_id and w[3] == key_name for w in current)
    assert any(w[1] == "retained" for w in wraps(rt, env_id))  # the BYOK wraps kept for restore
    # Per DEK, not per row: 60 rows + 15 events + 3 files moved with a handful of vault calls.
    assert 0 < counter.calls["wrap"] <= len(current) + 4, dict(counter.calls)

    data_keys(rt).flush()
    got = read_all(rt, env_id)
    assert got["rows"] == written["rows"]
    assert got["events"] == written["events"]
    assert got["files"] == written["files"]
    assert counter.calls["unwrap"] >= 1  # reading after the flush went to the external vault

    # The customer disables the key in their own vault: the policy turns unhealthy.
    rt._vaults.pop("cust-ext"), rt._vaults.pop(ext_id)
    vaults.set_key_enabled(rt, "cust-ext", key_name, False, force=True)
    after = check_policy(rt, pol["id"])
    assert after.status == "unhealthy" and any("disabled" in r for r in after.reasons), after.reasons
    # ... and the data plane fails closed: with no cached DEK, a read is refused, the refusal is
    # confirmed on a fresh connection and the environment is disabled.
    from keyshift.control.key_events import wire

    wire(rt)
    data_keys(rt).flush()
    with pytest.raises((EnvironmentUnavailableError, KeyInaccessibleError)):
        RecordStore(rt, env_id).get("t", next(iter(written["rows"])))
    assert env_row(rt, "fab-prod").state == "disabled"
