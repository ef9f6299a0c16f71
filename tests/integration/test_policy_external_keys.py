"""Policies pointing at keys that already exist in an external vault, named the vault's way: a KMIP
unique identifier, a KMS key id / ARN / alias, a PKCS#11 label — each checked healthy by a real
wrap/unwrap round trip. Keys created outside Keyshift (not through `key create`)."""

# ruff: noqa: F811 - pytest fixtures imported from servers are parameters here
from __future__ import annotations

import os
import secrets
from typing import Any

import pytest

from keyshift.control import policies, tenants
from keyshift.control.health import check_policy
from keyshift.runtime import Runtime
from keyshift.vaults.base import KeyType
from keyshift.vaults.external import add_external_vault
from servers import aws_test_env, kmip_server, moto_endpoint, softhsm_token  # noqa: F401 - fixtures

PIN_VAR = "KS_POLICY_TEST_PIN"


def _policy(rt: Runtime, vault: str, key: str) -> tuple[str, Any]:
    name = f"p-{secrets.token_hex(3)}"
    view = policies.create_policy(rt, "ext-t", name, region=rt.settings.default_region, vault=vault, key=key)
    return name, check_policy(rt, view["id"])


def test_policies_on_keys_named_the_vaults_way(
    sqlite_rt: Runtime, kmip_server: Any, moto_endpoint: str, aws_test_env: dict[str, str], softhsm_token: Any
) -> None:
    rt = sqlite_rt
    tenants.create_tenant(rt, "ext-t")

    # KMIP: a key made directly on the server by the customer, named by its unique identifier.
    from kmip import enums

    add_external_vault(rt, "kmip-c", "kmip", {
        "host": kmip_server.host, "port": kmip_server.port, "cert": str(kmip_server.pki.client_cert),
        "key": str(kmip_server.pki.client_key), "ca": str(kmip_server.pki.ca)}, soft_delete_days=30,
        purge_protection=True)  # fmt: skip
    kv = rt.vault("kmip-c")

    def make(c: Any) -> str:
        uid = c.create(enums.CryptographicAlgorithm.AES, 256, name=f"cust-{secrets.token_hex(3)}",
                       cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                                 enums.CryptographicUsageMask.DECRYPT])  # fmt: skip
        c.activate(uid)
        return str(uid)

    uid = kv._run("customer creates a key", make)  # type: ignore[attr-defined]
    _, report = _policy(rt, "kmip-c", uid)
    assert report.status == "healthy", report.reasons
    assert report.observed_key_version == uid

    # AWS KMS: a key made by the customer with boto3, named by key id, ARN and alias.
    import boto3

    kms = boto3.client("kms", region_name="us-east-1", endpoint_url=moto_endpoint)
    meta = kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    alias = f"alias/cust-{secrets.token_hex(3)}"
    kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    add_external_vault(rt, "kms-c", "aws-kms", {"endpoint_url": moto_endpoint, "region": "us-east-1"},
                       soft_delete_days=7, purge_protection=True)  # fmt: skip
    for name in (meta["KeyId"], meta["Arn"], alias):
        _, report = _policy(rt, "kms-c", name)
        assert report.status == "healthy", (name, report.reasons)
        assert report.observed_key_version == meta["KeyId"]

    # PKCS#11: an RSA key pair generated on the token by the customer, named by its label.
    from pkcs11 import KeyType as P11KeyType
    from pkcs11 import MechanismFlag

    os.environ[PIN_VAR] = softhsm_token.pin
    add_external_vault(rt, "hsm-c", "pkcs11", {"module": softhsm_token.module,
                       "token_label": softhsm_token.label, "pin": {"env": PIN_VAR}},
                       soft_delete_days=90, purge_protection=True)  # fmt: skip
    label = f"cust-rsa-{secrets.token_hex(3)}"
    hv = rt.vault("hsm-c")
    hv._run("customer creates a key", lambda s: s.generate_keypair(  # type: ignore[attr-defined]
        P11KeyType.RSA, 3072, label=label, id=b"\x01\x02", store=True,
        capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT))  # fmt: skip
    _, report = _policy(rt, "hsm-c", label)
    assert report.status == "healthy", report.reasons
    assert report.observed_key_version == "hex:0102"  # a non-text CKA_ID, shown as hex

    # An AES-256 key on the HSM is a valid CMK too: the HSM holds AES keys natively (key wrap).
    aes = f"cust-aes-{secrets.token_hex(3)}"
    hv.create_key(aes, KeyType.AES, 256)
    _, report = _policy(rt, "hsm-c", aes)
    assert report.status == "healthy", report.reasons


def test_policy_on_missing_external_key_is_unhealthy_not_an_error(
    sqlite_rt: Runtime, moto_endpoint: str, aws_test_env: dict[str, str]
) -> None:
    rt = sqlite_rt
    tenants.create_tenant(rt, "ext-t")
    add_external_vault(rt, "kms-m", "aws-kms", {"endpoint_url": moto_endpoint, "region": "us-east-1"},
                       soft_delete_days=7, purge_protection=True)  # fmt: skip
    _, report = _policy(rt, "kms-m", "alias/does-not-exist")
    assert report.status == "unhealthy" and any("not found" in r for r in report.reasons), report.reasons


@pytest.mark.parametrize("declared", [(None, True), (30, False)])
def test_undeclared_soft_delete_or_purge_protection_is_unhealthy(
    sqlite_rt: Runtime, moto_endpoint: str, aws_test_env: dict[str, str], declared: tuple[int | None, bool]
) -> None:
    rt = sqlite_rt
    tenants.create_tenant(rt, "ext-t")
    days, purge = declared
    add_external_vault(rt, "kms-d", "aws-kms", {"endpoint_url": moto_endpoint, "region": "us-east-1"},
                       soft_delete_days=days, purge_protection=purge)  # fmt: skip
    rt.vault("kms-d").create_key(
        "cmk-d-" + secrets.token_hex(3), __import__("keyshift").vaults.base.KeyType.AES, 256
    )  # type: ignore[attr-defined]
    key = rt.vault("kms-d").list_keys()[-1].ref.name  # type: ignore[attr-defined]
    _, report = _policy(rt, "kms-d", key)
    assert report.status == "unhealthy"
    assert any(("soft delete" if days is None else "purge protection") in r for r in report.reasons)
