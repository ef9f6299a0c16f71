"""Every vault failure, per vault kind, says who caused it (`err.outcome`): "refused" by the key's
owner, vault "unreachable", or "local" to this process. Real SoftHSM2 token, PyKMIP server and
moto server; the KMS answer codes moto cannot produce are mapped from canned responses."""

# ruff: noqa: F811 - pytest fixtures imported from servers are parameters here
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from integration.ext_servers import free_port
from keyshift.errors import KeyshiftError
from keyshift.vaults.base import OUTCOMES, KeyRef, KeyType, VaultLocalError, outcome_of
from servers import aws_test_env, kmip_server, moto_endpoint, softhsm_token  # noqa: F401 - fixtures

WHO = "pol-outcomes"
PIN_VAR = "KS_OUTCOMES_PIN"


def _outcome(fn: Any) -> tuple[str | None, str]:
    with pytest.raises(KeyshiftError) as err:
        fn()
    assert outcome_of(err.value) in OUTCOMES, err.value
    assert err.value.outcome == outcome_of(err.value)
    return err.value.outcome, err.value.code


def test_pkcs11_outcomes(softhsm_token: Any, tmp_path: Path) -> None:
    from keyshift.vaults.pkcs11 import Pkcs11Vault

    os.environ[PIN_VAR] = softhsm_token.pin
    cfg = {"module": softhsm_token.module, "token_label": softhsm_token.label, "pin": {"env": PIN_VAR}}
    v = Pkcs11Vault("hsm", cfg)
    name = f"k-{secrets.token_hex(3)}"
    v.create_key(name, KeyType.AES, 256)
    ref = KeyRef("hsm", name)
    w = v.wrap(ref, os.urandom(32), identity=WHO)
    # refused: the owner disabled, then destroyed the key
    v.set_enabled(name, False)
    assert _outcome(lambda: v.unwrap(w, identity=WHO)) == ("refused", "key_disabled")
    v.purge_key(name)
    assert _outcome(lambda: v.unwrap(w, identity=WHO)) == ("refused", "key_not_found")
    # local: no module at that path, no such token for this process's config, no PIN
    missing = tmp_path / "no-such-libsofthsm2.so"
    gone = Pkcs11Vault("hsm-m", {**cfg, "module": str(missing)})
    assert _outcome(lambda: gone.describe(ref)) == ("local", "vault_module_unavailable")
    other = Pkcs11Vault("hsm-t", {**cfg, "token_label": "no-such-token"})
    outcome, code = _outcome(lambda: other.describe(ref))
    assert (outcome, code) == ("local", "vault_token_not_found")
    del os.environ[PIN_VAR]
    try:
        assert _outcome(lambda: Pkcs11Vault("hsm-p", cfg).describe(ref)) == (
            "local",
            "vault_secret_unavailable",
        )
    finally:
        os.environ[PIN_VAR] = softhsm_token.pin
    info = other.info()
    assert info.reachable is False and info.outcome == "local"


def test_kmip_outcomes(kmip_server: Any, tmp_path: Path) -> None:
    from keyshift.vaults.kmip import KmipVault

    cfg = {"host": kmip_server.host, "port": kmip_server.port, "cert": str(kmip_server.pki.client_cert),
           "key": str(kmip_server.pki.client_key), "ca": str(kmip_server.pki.ca)}  # fmt: skip
    v = KmipVault("kmip", cfg)
    name = f"k-{secrets.token_hex(3)}"
    v.create_key(name, KeyType.AES, 256)
    w = v.wrap(KeyRef("kmip", name), os.urandom(32), identity=WHO)
    v.set_enabled(name, False)
    assert _outcome(lambda: v.unwrap(w, identity=WHO)) == ("refused", "key_disabled")
    # unreachable: nothing listens there
    dead = KmipVault("kmip-d", {**cfg, "port": free_port(), "timeout": 2})
    assert _outcome(lambda: dead.describe(KeyRef("kmip-d", name)))[0] == "unreachable"
    # local: this process cannot read its client key file
    nofile = KmipVault("kmip-f", {**cfg, "key": str(tmp_path / "missing.key")})
    assert _outcome(lambda: nofile.describe(KeyRef("kmip-f", name))) == ("local", "vault_config_missing")


def test_aws_kms_outcomes(
    moto_endpoint: str, aws_test_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from keyshift.vaults.aws_kms import AwsKmsVault

    cfg = {"endpoint_url": moto_endpoint, "region": "us-east-1"}
    v = AwsKmsVault("kms", cfg)
    name = f"k-{secrets.token_hex(3)}"
    v.create_key(name, KeyType.AES, 256)
    w = v.wrap(KeyRef("kms", name), os.urandom(32), identity=WHO)
    v.set_enabled(name, False)
    assert _outcome(lambda: v.unwrap(w, identity=WHO)) == ("refused", "key_disabled")
    v.set_enabled(name, True)
    v.delete_key(name)
    assert _outcome(lambda: v.unwrap(w, identity=WHO)) == ("refused", "key_deleted")
    dead = AwsKmsVault("kms-d", {"endpoint_url": f"http://127.0.0.1:{free_port()}", "region": "us-east-1"})
    assert _outcome(lambda: dead.describe(KeyRef("kms-d", name))) == ("unreachable", "vault_unavailable")
    # local: this process has no AWS credentials at all
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    nocreds = AwsKmsVault("kms-n", cfg)
    assert _outcome(lambda: nocreds.describe(KeyRef("kms-n", name))) == ("local", "vault_credentials_missing")


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (400, "AccessDeniedException", "refused"),
        (400, "DisabledException", "refused"),
        (400, "KMSInvalidStateException", "refused"),
        (400, "NotFoundException", "refused"),
        (400, "UnrecognizedClientException", "local"),
        (400, "InvalidSignatureException", "local"),
        (403, "ExpiredTokenException", "local"),
        (403, "InvalidClientTokenId", "local"),
        (400, "SomethingNewException", "local"),
        (500, "KMSInternalException", "unreachable"),
        (400, "ThrottlingException", "unreachable"),
    ],
)
def test_aws_kms_answer_codes(status: int, code: str, outcome: str) -> None:
    """AWS answers moto's server does not give (bad or expired credentials, throttling)."""
    from botocore.exceptions import ClientError

    from keyshift.vaults.aws_kms import _map_client_error

    exc = ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Decrypt")
    err = _map_client_error(exc, "key k")
    assert err.outcome == outcome, (code, type(err).__name__)
    if outcome == "local":
        assert isinstance(err, VaultLocalError) and err.http_status == 503 and not err.retryable
        assert err.exit_code == 6


def test_local_vault_refusals_are_refused(rt: Any) -> None:
    from keyshift.control import vaults

    vaults.create_local_vault(rt, "cust", soft_delete_days=30, purge_protection=True)
    vaults.create_key(rt, "cust", "k", "RSA", 2048)
    vaults.grant_key(rt, "cust", "k", WHO, "get,wrapKey,unwrapKey")
    v = rt.vault("cust")
    w = v.wrap(KeyRef("cust", "k"), os.urandom(32), identity=WHO)
    vaults.revoke_key_grant(rt, "cust", "k", WHO)
    assert _outcome(lambda: v.unwrap(w, identity=WHO)) == ("refused", "access_denied")
