"""CLI: `byok key generate|import|list|activate`, `byok apply|revert`: JSON, exit codes, errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from control_support import Cli, snapshot

from keyshift.runtime import Runtime


@pytest.fixture
def cli(rt: Runtime, home: Path, db_url: str | None) -> Cli:
    return Cli(rt, home, db_url)


def test_byok_cli_flow_and_errors(cli: Cli, tmp_path: Path) -> None:
    cli("tenant", "create", "fab", "--byok")
    cli("env", "create", "fab", "fab-prod", "--type", "production")
    out = tmp_path / "k1.pfx"
    k = cli("byok", "key", "generate", "fab", "--name", "k1", "--out", str(out), "--password", "s3cret-pw")
    assert k["state"] == "available" and k["file"] == str(out)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert "s3cret-pw" not in out.read_bytes().decode("latin-1")
    before = snapshot(cli.rt)
    errors = [
        (
            ("byok", "key", "import", "fab", "--name", "k2", "--file", str(out), "--password", "wrong"),
            "wrong_password",
            2,
        ),
        (
            ("byok", "key", "import", "fab", "--name", "k1", "--file", str(out), "--password", "s3cret-pw"),
            "key_exists",
            4,
        ),
        (
            ("byok", "key", "import", "ghost", "--name", "k2", "--file", str(out), "--password", "s3cret-pw"),
            "tenant_not_found",
            3,
        ),
        (
            ("byok", "key", "generate", "fab", "--name", "k3", "--out", str(out), "--password", "s3cret-pw"),
            "file_exists",
            2,
        ),
        (("byok", "key", "activate", "fab", "nope"), "byok_key_not_found", 3),
        (("byok", "apply", "fab-prod"), "no_active_key", 4),
        (("byok", "revert", "fab-prod"), "not_byok", 4),
        (("env", "create", "fab", "b2", "--byok"), "no_active_key", 4),
    ]
    for args, code, exit_code in errors:
        err = cli(*args, code=exit_code)
        assert err["code"] == code, (args, err)
        assert "s3cret-pw" not in err["message"]
        assert snapshot(cli.rt) == before
    # The password may come from the environment instead of the command line (kept out of `ps`).
    imported = cli(
        "byok",
        "key",
        "import",
        "fab",
        "--name",
        "k2",
        "--file",
        str(out),
        "--region",
        "us",
        env={"KEYSHIFT_BYOK_PASSWORD": "s3cret-pw"},
        code=4,
    )
    assert imported["code"] == "duplicate_key"  # the password worked: it got as far as the key itself
    assert cli("byok", "key", "activate", "fab", "k1")["state"] == "active"
    assert [x["state"] for x in cli("byok", "key", "list", "fab")] == ["active"]
    applied = cli("byok", "apply", "fab-prod")
    assert applied["encryption"]["mode"] == "byok" and applied["encryption"]["managed_by"] == "customer"
    err = cli("byok", "revert", "fab-prod", code=2)
    assert err["code"] == "confirmation_required"
    err = cli("byok", "revert", "fab-prod", "--confirm", "fab", code=2)
    assert err["code"] == "confirmation_mismatch"
    reverted = cli("byok", "revert", "fab-prod", "--confirm", "fab-prod")
    assert reverted["encryption"]["mode"] == "platform"
    assert cli("env", "create", "fab", "b2", "--byok")["encryption"]["mode"] == "byok"
