"""The reference decryptor with the CMK in the customer's own vault: an RSA-2048 key in SoftHSM2
(pkcs11, OAEP), an AES-256 key on the PyKMIP server (kmip envelope) and in moto's KMS (aws-kms,
encryption context). The tool reaches the vault with the connection settings recorded for it (or
overrides given on its command line), decrypts everything, and matches `env export` byte for byte.
Each case skips with the reason when its server cannot run here."""

# ruff: noqa: F811 - pytest fixtures imported from servers are parameters here
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from keyshift.control import policies, vaults
from keyshift.control.health import check_policy
from keyshift.features.export import export_environment
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.audit import AuditLog
from keyshift.stores.files import FileStore
from keyshift.stores.records import RecordStore
from keyshift.vaults.external import add_external_vault
from migrate.helpers import env_row, make_env, make_tenant, run, wraps
from reference.helpers import assert_matches_sdk, decrypt, tree
from servers import aws_test_env, kmip_server, moto_endpoint, softhsm_token  # noqa: F401 - fixtures

PIN_VAR = "KS_REFERENCE_TEST_PIN"


def _register(request: pytest.FixtureRequest, rt: Runtime, kind: str) -> tuple[str, str, int]:
    if kind == "pkcs11":
        tok = request.getfixturevalue("softhsm_token")
        os.environ[PIN_VAR] = tok.pin
        cfg: dict[str, Any] = {"module": tok.module, "token_label": tok.label, "pin": {"env": PIN_VAR}}
        key = ("RSA", f"cmk-{os.urandom(3).hex()}", 2048)
    elif kind == "kmip":
        srv = request.getfixturevalue("kmip_server")
        cfg = {
            "host": srv.host,
            "port": srv.port,
            "cert": str(srv.pki.client_cert),
            "key": str(srv.pki.client_key),
            "ca": str(srv.pki.ca),
        }
        key = ("AES", f"cmk-{os.urandom(3).hex()}", 256)
    else:
        request.getfixturevalue("aws_test_env")
        cfg = {"endpoint_url": request.getfixturevalue("moto_endpoint"), "region": "us-east-1"}
        key = ("AES", f"cmk-{os.urandom(3).hex()}", 256)
    add_external_vault(rt, "cust-ext", kind, cfg, soft_delete_days=30, purge_protection=True)
    return key


@pytest.mark.parametrize("kind", ["pkcs11", "kmip", "aws-kms"])
def test_cmk_in_an_external_vault(
    request: pytest.FixtureRequest, sqlite_rt: Runtime, tmp_path: Path, kind: str
) -> None:
    rt = sqlite_rt
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "contoso-prod")
    RecordStore(rt, env_id).put_many("t", [(f"r{i}", {"n": i}) for i in range(20)])
    AuditLog(rt, env_id).append({"action": "before link"})
    FileStore(rt, env_id).put("docs/a.bin", os.urandom(5000))
    key_type, key_name, size = _register(request, rt, kind)
    vaults.create_key(rt, "cust-ext", key_name, key_type, size)
    region = rt.settings.default_region
    pol = policies.create_policy(rt, "contoso", "pol", region=region, vault="cust-ext", key=key_name)
    assert check_policy(rt, pol["id"]).status == "healthy"
    assert run(rt, start_link(rt, "pol", "contoso-prod")["id"]) == "succeeded"
    ext_id = env_row(rt, "contoso-prod").kek_vault_id
    assert all(w[2] == ext_id for w in wraps(rt, env_id) if w[1] == "current")
    RecordStore(rt, env_id).put("t", "after", {"linked": True})
    AuditLog(rt, env_id).append({"action": "after link"})

    home = rt.settings.home_path()
    out = tmp_path / "plain"
    extra: list[str] = []
    if kind == "aws-kms":  # the customer names their own endpoint: same settings, given explicitly
        endpoint = request.getfixturevalue("moto_endpoint")
        extra = ["--vault-config", "cust-ext", json.dumps({"endpoint_url": endpoint})]
    result = decrypt(home, "contoso-prod", out, extra=extra)
    assert result.returncode == 0, result.stderr
    manifest = assert_matches_sdk(rt, env_id, out)
    assert manifest["records"] == {"t": 21} and manifest["audit_events"] == 2 and manifest["files"] == 1
    export_environment(rt, env_id, tmp_path / "exported")
    assert tree(out) == tree(tmp_path / "exported")

    # The wrapped DEK is bound to its environment: presenting it for another one fails to unwrap.
    if kind in ("kmip", "aws-kms"):
        import sqlite3

        other = make_env(rt, "contoso", "contoso-dev")
        with sqlite3.connect(home / "state.db") as conn:
            conn.execute("UPDATE deks SET environment_id = ? WHERE environment_id = ?", (other, env_id))
            conn.execute(
                "UPDATE data_records SET environment_id = ? WHERE environment_id = ?", (other, env_id)
            )
        result = decrypt(home, "contoso-dev", tmp_path / "moved")
        # kmip: the envelope's HMAC binds the context (8); KMS refuses the other EncryptionContext (6).
        assert result.returncode == (8 if kind == "kmip" else 6), result.stderr
        assert "data key" in result.stderr and not (tmp_path / "moved").exists()


def test_postgresql_document_store_and_s3_file_store(
    pg_url: str,
    moto_endpoint: str,
    aws_test_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Audit events in PostgreSQL JSONB and files in S3 (moto): the decryptor is told where they are."""
    import boto3

    from keyshift.bootstrap import init_home

    bucket = f"ks-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    monkeypatch.setenv("KEYSHIFT_DOCUMENT_STORE_URL", pg_url)
    monkeypatch.setenv("KEYSHIFT_FILE_STORE_URL", f"s3://{bucket}/data")
    monkeypatch.setenv("KEYSHIFT_FILE_STORE_ENDPOINT", moto_endpoint)
    home = tmp_path / "home"
    init_home(home, database_url=pg_url)
    with Runtime.open(home=home, database_url=pg_url, principal="operator:test") as rt:
        make_tenant(rt, "contoso")
        env_id = make_env(rt, "contoso", "contoso-prod")
        RecordStore(rt, env_id).put("t", "r1", {"n": 1})
        for i in range(3):
            AuditLog(rt, env_id).append({"i": i})
        FileStore(rt, env_id).put("a/b.txt", b"in s3")
        FileStore(rt, env_id).put("big.bin", os.urandom((1 << 20) + 10))
        out = tmp_path / "plain"
        extra = [
            "--document-store-url",
            pg_url,
            "--file-store-url",
            f"s3://{bucket}/data",
            "--file-store-endpoint",
            moto_endpoint,
        ]
        result = decrypt(home, "contoso-prod", out, db_url=pg_url, extra=extra)
        assert result.returncode == 0, result.stderr
        manifest = assert_matches_sdk(rt, env_id, out)
        assert manifest["audit_events"] == 3 and manifest["files"] == 2
        export_environment(rt, env_id, tmp_path / "exported")
        assert tree(out) == tree(tmp_path / "exported")
        # Without the stores' locations the tool does not report the data as absent: it refuses.
        for given in (extra[:2], extra[2:]):
            missing = decrypt(home, "contoso-prod", tmp_path / "missing", db_url=pg_url, extra=given)
            assert missing.returncode == 3 and not (tmp_path / "missing").exists()
            option = "--file-store-url" if given == extra[:2] else "--document-store-url"
            assert option in missing.stderr
