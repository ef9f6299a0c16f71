"""A tenant with one production environment linked to a policy whose key lives in a real vault:
a SoftHSM2 token (pkcs11), the PyKMIP server (kmip), moto's KMS (aws-kms) or the local vault."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from keyshift.control import environments, policies, tenants, vaults
from keyshift.jobs.runner import Worker
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.records import RecordStore
from keyshift.vaults.external import add_external_vault

PIN_VAR = "KS_CMK_WORLD_PIN"


@dataclass
class CmkWorld:
    vault: str
    key: str
    policy: str
    identity: str
    env: str


def register(rt: Runtime, kind: str, server: Any, name: str = "cust") -> None:
    """Register the customer's vault of `kind`; `server` is the fixture value (token, KMIP server,
    moto endpoint) or None for the local vault."""
    if kind == "pkcs11":
        os.environ[PIN_VAR] = server.pin
        cfg: dict[str, Any] = {"module": server.module, "token_label": server.label, "pin": {"env": PIN_VAR}}
    elif kind == "kmip":
        cfg = {"host": server.host, "port": server.port, "cert": str(server.pki.client_cert),
               "key": str(server.pki.client_key), "ca": str(server.pki.ca)}  # fmt: skip
    elif kind == "aws-kms":
        cfg = {"endpoint_url": server, "region": "us-east-1"}
    else:
        vaults.create_local_vault(rt, name, soft_delete_days=30, purge_protection=True)
        return
    add_external_vault(rt, name, kind, cfg, soft_delete_days=30, purge_protection=True)


def cmk_world(
    rt: Runtime, kind: str, server: Any, *, key_type: str = "AES", size: int = 256, rows: int = 10
) -> CmkWorld:
    register(rt, kind, server)
    key = f"cmk-{os.urandom(3).hex()}"
    vaults.create_key(rt, "cust", key, key_type, size)
    tenants.create_tenant(rt, "contoso")
    pol = policies.create_policy(
        rt, "contoso", "pol", region=rt.settings.default_region, vault="cust", key=key
    )
    if kind == "local":
        vaults.grant_key(rt, "cust", key, pol["identity"], "get,wrapKey,unwrapKey")
    env = environments.create_environment(rt, "contoso", "contoso-prod", env_type="production")
    environments.set_managed(rt, "contoso-prod", True)
    if rows:
        RecordStore(rt, env["id"]).put_many("t", [(f"r{i:05d}", {"n": i}) for i in range(rows)])
    job = start_link(rt, pol["id"], "contoso-prod")  # checks the policy for real first
    assert Worker(rt, poll_seconds=0.01).run_job(job["id"]) == "succeeded"
    return CmkWorld("cust", key, pol["id"], pol["identity"], env["id"])
