"""`keyshift token create|list|revoke` through the real CLI: shown once, --json shapes, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from keyshift.bootstrap import init_home
from keyshift.cli.main import app


def _run(home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--home", str(home), "--json", *args])
    return result.exit_code, result.stdout, result.stderr


def test_token_cli_create_list_revoke(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_home(home)
    code, out, _ = _run(home, "tenant", "create", "contoso")
    assert code == 0
    code, out, _ = _run(home, "token", "create", "--role", "tenant_admin", "--tenant", "contoso")
    assert code == 0
    created = json.loads(out)
    assert created["token"].startswith(created["id"] + ".")
    code, out, _ = _run(home, "token", "list")
    listed = json.loads(out)
    assert [t["id"] for t in listed] == [created["id"]] and "token" not in listed[0]
    assert created["token"].split(".")[1] not in out
    code, out, _ = _run(home, "token", "revoke", created["id"])
    assert code == 0 and json.loads(out)["state"] == "revoked"


def test_token_cli_bad_input_exit_codes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_home(home)
    code, out, err = _run(home, "token", "create", "--role", "root")
    assert code == 2 and json.loads(err)["error"]["code"] == "invalid_role" and out == ""
    code, _, err = _run(home, "token", "create", "--role", "tenant_admin", "--tenant", "nobody")
    assert code == 3 and json.loads(err)["error"]["code"] == "tenant_not_found"
    code, _, err = _run(home, "token", "revoke", "tok_nope")
    assert code == 3
    code, out, _ = _run(home, "token", "list")
    assert json.loads(out) == []
