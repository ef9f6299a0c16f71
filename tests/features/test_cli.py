"""The CLI commands of the feature storages: JSON output, error JSON on stderr, documented exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyshift.bootstrap import init_home
from keyshift.cli.main import app


@pytest.fixture
def cli(tmp_path: Path):  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    init_home(home)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        res = runner.invoke(app, ["--home", str(home), "--json", *args])
        return res.exit_code, res.stdout, res.stderr

    for args in (
        ("tenant", "create", "contoso"),
        ("env", "create", "contoso", "prod"),
        ("env", "feature", "enable", "prod", "search"),
        ("env", "feature", "enable", "prod", "data-lake"),
        ("env", "feature", "enable", "prod", "long-term-retention"),
        ("data", "put", "prod", "accounts", "a1", '{"name": "Fabrikam Paris"}'),
        ("data", "put", "prod", "accounts", "a2", '{"name": "Contoso Oslo"}'),
    ):
        code, _, err = run(*args)
        assert code == 0, err
    return run


def test_search_lake_and_backups_through_the_cli(cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("data", "search", "prod", "accounts", "paris")
    assert code == 4 and json.loads(err)["error"]["code"] == "no_searchable_fields"
    code, out, err = cli("data", "search-fields", "prod", "accounts", "name")
    assert code == 0, err
    assert json.loads(out)["state"] == "succeeded"
    code, out, _ = cli("data", "search", "prod", "accounts", "PARIS", "--limit", "5")
    assert code == 0 and [r["id"] for r in json.loads(out)["results"]] == ["a1"]
    code, _, err = cli("data", "search", "prod", "accounts", "")
    assert code == 2 and json.loads(err)["error"]["code"] == "invalid_query"

    code, out, _ = cli("lake", "export", "prod", "accounts")
    assert code == 0
    path = json.loads(out)["path"]
    code, out, _ = cli("lake", "read", "prod", path)
    assert code == 0 and json.loads(out)["rows"] == 2
    code, _, err = cli("lake", "read", "prod", "accounts/none.parquet")
    assert code == 3 and json.loads(err)["error"]["code"] == "lake_file_not_found"

    code, out, _ = cli("env", "backup", "prod")
    assert code == 0
    backup = json.loads(out)["id"]
    code, out, _ = cli("env", "backups", "prod")
    assert [b["id"] for b in json.loads(out)] == [backup]
    cli("data", "delete", "prod", "accounts", "a2")
    code, out, err = cli("env", "restore", "prod", "--from", backup)
    assert code == 0, err
    assert json.loads(out)["restored"]["records"] == 2
    code, out, _ = cli("data", "get", "prod", "accounts", "a2")
    assert code == 0 and "Contoso Oslo" in out
    code, _, err = cli("env", "restore", "prod", "--from", "bak_missing")
    assert code == 3 and json.loads(err)["error"]["code"] == "backup_not_found"

    # copy, and the SQL-restriction refusals
    assert cli("env", "create", "contoso", "dev")[0] == 0
    code, out, err = cli("env", "copy", "prod", "dev")
    assert code == 0, err
    code, out, _ = cli("data", "get", "dev", "accounts", "a1")
    assert code == 0 and "Fabrikam" in out
    assert cli("tenant", "create", "legacy", "--byok")[0] == 0
    assert cli("env", "create", "legacy", "old")[0] == 0
    code, _, err = cli("env", "feature", "enable", "old", "search")
    assert code == 4 and json.loads(err)["error"]["code"] == "sql_restriction"
    code, _, err = cli("env", "backup", "old")
    assert code == 4 and json.loads(err)["error"]["code"] == "sql_restriction"
    code, _, err = cli("env", "copy", "prod", "old")
    assert code == 4 and json.loads(err)["error"]["code"] in ("different_tenant", "sql_restriction")
