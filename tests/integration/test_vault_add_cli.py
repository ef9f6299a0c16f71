"""`keyshift vault add` for pkcs11 / kmip / aws-kms through the CLI: reference-only secrets (no PIN
in the state DB, on either backend), reachability in `vault show`, `key create` where the vault
allows it, and bad input refused with the documented exit code and nothing changed."""

# ruff: noqa: F811 - pytest fixtures imported from servers are parameters here
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from keyshift.cli.main import app
from keyshift.db.models import AdminAuditEvent, Base
from keyshift.runtime import Runtime
from servers import aws_test_env, kmip_server, moto_endpoint, softhsm_token  # noqa: F401 - fixtures

PIN_VAR = "KS_CLI_TEST_PIN"


class Cli:
    def __init__(self, home: Path, db_url: str | None, env: dict[str, str] | None = None) -> None:
        self.home, self.db_url, self.env = home, db_url, dict(env or {})
        self.runner = CliRunner()

    def raw(self, *args: str) -> Any:
        base = ["--home", str(self.home), "--json"] + (["--database-url", self.db_url] if self.db_url else [])
        return self.runner.invoke(app, [*base, *args], env=self.env)

    def __call__(self, *args: str, code: int = 0) -> Any:
        res = self.raw(*args)
        assert res.exit_code == code, (args, res.exit_code, res.stdout, res.stderr)
        if code == 0:
            return json.loads(res.stdout)
        if code == 2 and not res.stderr.lstrip().startswith("{"):
            return {"code": "usage", "message": res.stderr}  # click's own usage error (unknown option)
        return json.loads(res.stderr)["error"]


def dump_db(rt: Runtime) -> str:
    """Every row of every table, as text: what an attacker with the state DB would see."""
    out = []
    with rt.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            try:
                rows = conn.execute(select(table)).all()
            except Exception:  # noqa: S112 - a table another part has not migrated yet
                continue
            out.extend(repr(tuple(r)) for r in rows)
    return "\n".join(out)


def vault_count(rt: Runtime) -> int:
    from keyshift.db.models import VaultRecord

    with rt.transaction() as s:
        return len(s.scalars(select(VaultRecord.id)).all())


def refusals(rt: Runtime, action: str) -> list[AdminAuditEvent]:
    with rt.transaction() as s:
        rows = s.scalars(
            select(AdminAuditEvent).where(
                AdminAuditEvent.action == action, AdminAuditEvent.outcome == "error"
            )
        ).all()
        for r in rows:
            s.expunge(r)
        return list(rows)


@pytest.fixture(scope="module")
def shared_rt(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One SQLite home for the tests whose subject is not the SQL backend (each uses its own names)."""
    from keyshift.bootstrap import init_home

    path = tmp_path_factory.mktemp("vault-add-home") / "home"
    init_home(path, allow_fake_clock=True)
    runtime = Runtime.open(home=path, principal="operator:test")
    yield runtime
    runtime.close()


@pytest.fixture
def hsm_cli(rt: Runtime, home: Path, db_url: str | None, softhsm_token: Any) -> Cli:
    return Cli(home, db_url, {PIN_VAR: softhsm_token.pin})


def test_pkcs11_add_show_and_key_create_store_no_pin(rt: Runtime, hsm_cli: Cli, softhsm_token: Any) -> None:
    v = hsm_cli(
        "vault", "add", "hsm", "--kind", "pkcs11", "--module", softhsm_token.module,
        "--token-label", softhsm_token.label, "--pin-env", PIN_VAR,
        "--soft-delete-days", "90", "--purge-protection",
    )  # fmt: skip
    assert v["kind"] == "pkcs11" and v["config"]["pin"] == {"env": PIN_VAR}
    assert v["purge_protection"] is True and v["soft_delete_days"] == 90 and v["settings_declared"] is True
    shown = hsm_cli("vault", "show", "hsm")
    assert shown["reachable"] is True, shown
    aes, rsa = f"cli-aes-{secrets.token_hex(3)}", f"cli-rsa-{secrets.token_hex(3)}"
    k = hsm_cli("key", "create", "hsm", aes, "--type", "AES", "--size", "256")
    assert (k["type"], k["size"], k["current_version"]) == ("AES", 256, "1")
    r = hsm_cli("key", "create", "hsm", rsa, "--type", "RSA", "--size", "2048")
    assert (r["type"], r["size"]) == ("RSA", 2048)
    names = {x["name"] for x in hsm_cli("vault", "show", "hsm")["keys"]}
    assert {aes, rsa} <= names
    # A wrap/unwrap through the registry-opened adapter works with the PIN read from the variable.
    os.environ[PIN_VAR] = softhsm_token.pin
    try:
        from keyshift.vaults.base import KeyRef

        vault = rt.vault("hsm")
        w = vault.wrap(KeyRef("hsm", aes), b"z" * 32, identity="pol-x")
        assert vault.unwrap(w, identity="pol-x") == b"z" * 32
    finally:
        del os.environ[PIN_VAR]
    text = dump_db(rt)
    assert softhsm_token.pin not in text and softhsm_token.so_pin not in text
    assert PIN_VAR in text  # the reference is there, the secret is not
    with rt.transaction() as s:
        actions = {e.action for e in s.scalars(select(AdminAuditEvent)).all()}
    assert {"vault.add", "key.create"} <= actions


def test_pin_file_reference_is_stored_absolute(
    shared_rt: Runtime,
    softhsm_token: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt, hsm_cli = shared_rt, Cli(shared_rt.home.path, None)
    (tmp_path / "pin.txt").write_text(softhsm_token.pin)
    (tmp_path / "pin.txt").chmod(0o600)
    monkeypatch.chdir(tmp_path)
    v = hsm_cli(
        "vault", "add", "hsm-f", "--kind", "pkcs11", "--module", softhsm_token.module,
        "--token-label", softhsm_token.label, "--pin-file", "pin.txt",
    )  # fmt: skip
    assert v["config"]["pin"] == {"file": str(tmp_path / "pin.txt")}
    assert hsm_cli("vault", "show", "hsm-f")["reachable"] is True
    assert softhsm_token.pin not in dump_db(rt)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--pin", "1234"], 2),  # there is no option taking a secret value
        ([], 2),  # neither --pin-env nor --pin-file
        (["--pin-env", PIN_VAR, "--pin-file", "/tmp/x"], 2),
        (["--pin-env", "NOT A VAR NAME"], 2),
        (["--pin-env", PIN_VAR, "--host", "h"], 2),  # a kmip option on a pkcs11 vault
        (["--pin-env", PIN_VAR, "--soft-delete-days", "-1"], 2),
    ],
)
def test_bad_pkcs11_input_is_refused_and_nothing_changes(
    shared_rt: Runtime,
    softhsm_token: Any,
    args: list[str],
    code: int,
) -> None:
    cli = Cli(shared_rt.home.path, None)
    before = (vault_count(shared_rt), len(refusals(shared_rt, "vault.add")))
    err = cli(
        "vault", "add", "hsm-bad", "--kind", "pkcs11", "--module", softhsm_token.module,
        "--token-label", softhsm_token.label, *args, code=code,
    )  # fmt: skip
    assert "1234" not in json.dumps(err)
    assert vault_count(shared_rt) == before[0]
    if err["code"] != "usage":  # refused by Keyshift (not by the option parser): audited
        assert len(refusals(shared_rt, "vault.add")) == before[1] + 1


def test_kmip_add_show_key_create_and_unsupported_rsa(shared_rt: Runtime, kmip_server: Any) -> None:
    cli = Cli(shared_rt.home.path, None)
    pki = kmip_server.pki
    v = cli(
        "vault", "add", "kmip", "--kind", "kmip", "--host", kmip_server.host, "--port", str(kmip_server.port),
        "--cert", str(pki.client_cert), "--key", str(pki.client_key), "--ca", str(pki.ca),
        "--soft-delete-days", "30", "--purge-protection",
    )  # fmt: skip
    assert v["config"]["key"] == str(pki.client_key)
    shown = cli("vault", "show", "kmip")
    assert shown["reachable"] is True and shown["symmetric_only"] is True
    k = cli("key", "create", "kmip", "cli-kek", "--type", "AES", "--size", "256")
    assert k["type"] == "AES" and k["enabled"] is True
    err = cli("key", "create", "kmip", "cli-rsa", "--type", "RSA", "--size", "2048", code=4)
    assert "not supported by vault kind kmip" in err["message"]
    err = cli("key", "delete", "kmip", "cli-kek", code=4)
    assert cli("key", "show", "kmip", "cli-kek")["enabled"] is True
    assert pki.client_key.read_text() not in dump_db(shared_rt)


def test_aws_add_show_key_create_and_unreachable(
    shared_rt: Runtime,
    moto_endpoint: str,
    aws_test_env: dict[str, str],
) -> None:
    from integration.ext_servers import free_port

    cli = Cli(shared_rt.home.path, None)
    cli("vault", "add", "kms", "--kind", "aws-kms", "--endpoint-url", moto_endpoint, "--region", "us-east-1",
        "--soft-delete-days", "7", "--purge-protection")  # fmt: skip
    assert cli("vault", "show", "kms")["reachable"] is True
    k = cli("key", "create", "kms", "cli-kek", "--type", "AES", "--size", "256")
    assert k["enabled"] is True
    assert cli("key", "disable", "kms", "cli-kek")["state"] == "disabled"
    dead = f"http://127.0.0.1:{free_port()}"
    cli("vault", "add", "kms-dead", "--kind", "aws-kms", "--endpoint-url", dead, "--region", "us-east-1")
    shown = cli("vault", "show", "kms-dead")  # an unreachable vault is reported, not an error
    assert shown["reachable"] is False and "unavailable" in shown["detail"]
    assert aws_test_env["AWS_SECRET_ACCESS_KEY"] not in dump_db(shared_rt)
    before = vault_count(shared_rt)
    cli("vault", "add", "kms2", "--kind", "aws-kms", "--endpoint-url", moto_endpoint, code=2)  # no region
    cli(
        "vault",
        "add",
        "kms2",
        "--kind",
        "aws-kms",
        "--region",
        "us-east-1",
        "--soft-delete-days",
        "3",
        code=2,
    )
    cli("vault", "add", "kms", "--kind", "aws-kms", "--region", "us-east-1", code=4)  # name taken
    cli("vault", "add", "x", "--kind", "hsm", code=2)
    assert vault_count(shared_rt) == before


def test_missing_pin_variable_makes_the_vault_unreachable_not_a_crash(
    shared_rt: Runtime, softhsm_token: Any
) -> None:
    cli = Cli(shared_rt.home.path, None)
    cli("vault", "add", "hsm-p", "--kind", "pkcs11", "--module", softhsm_token.module,
        "--token-label", softhsm_token.label, "--pin-env", "KS_CLI_TEST_UNSET_VAR")  # fmt: skip
    view = cli("vault", "show", "hsm-p")
    assert view["reachable"] is False and "KS_CLI_TEST_UNSET_VAR" in view["detail"]
    err = cli("key", "create", "hsm-p", "k", "--type", "AES", "--size", "256", code=6)
    assert err["code"] == "vault_secret_unavailable"


def test_wrong_pin_is_an_opaque_login_failure(softhsm_token: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a token this process never logged in to (PKCS#11 login state is per process and token)."""
    from integration.ext_servers import SPARE_TOKEN_LABEL
    from keyshift.vaults.base import KeyRef, VaultLocalError
    from keyshift.vaults.pkcs11 import Pkcs11Vault

    monkeypatch.setenv(PIN_VAR, "not-the-pin")
    v = Pkcs11Vault("hsm-w", {"module": softhsm_token.module, "token_label": SPARE_TOKEN_LABEL,
                              "pin": {"env": PIN_VAR}})  # fmt: skip
    info = v.info()
    assert info.reachable is False and "refused this process's login" in info.detail
    assert info.outcome == "local"  # this process's PIN: never a revocation
    with pytest.raises(VaultLocalError) as err:
        v.describe(KeyRef("hsm-w", "k"))
    assert (
        err.value.code == "vault_login_failed" and "fix the PIN in environment variable" in err.value.message
    )
    assert "not-the-pin" not in err.value.message + info.detail
    monkeypatch.setenv(PIN_VAR, softhsm_token.pin)  # the right PIN opens it
    assert Pkcs11Vault("hsm-w2", {"module": softhsm_token.module, "token_label": SPARE_TOKEN_LABEL,
                                  "pin": {"env": PIN_VAR}}).info().reachable is True  # fmt: skip
