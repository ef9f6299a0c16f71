"""CLI: `policy create|list|show|health|update|delete` — identity in JSON, health, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from control_support import Cli, snapshot

from keyshift.runtime import Runtime


@pytest.fixture
def cli(rt: Runtime, home: Path, db_url: str | None) -> Cli:
    return Cli(rt, home, db_url)


def test_policy_cli_flow_and_errors(cli: Cli) -> None:
    cli("tenant", "create", "contoso")
    cli("vault", "create", "cust", "--purge-protection")
    cli("key", "create", "cust", "cmk", "--type", "RSA", "--size", "3072")
    p = cli("policy", "create", "contoso", "pol", "--region", "eu", "--vault", "cust", "--key", "cmk")
    assert p["identity"].startswith("pol-") and p["health"] == "undetermined"
    import json

    from keyshift.cli.main import app

    res = cli.runner.invoke(app, [*cli.base(), "--json", "policy", "health", "pol"], env={"KEYSHIFT_NOW": ""})
    assert res.exit_code == 4  # not healthy: exit 4, the result still printed
    h = json.loads(res.stdout)
    assert h["health"] == "unhealthy" and any("lacks" in r for r in h["reasons"])
    cli("key", "grant", "cust", "cmk", "--identity", p["identity"], "--permissions", "get,wrapKey,unwrapKey")
    assert cli("policy", "health", p["id"])["health"] == "healthy"
    assert cli("policy", "show", "pol")["health"] == "healthy"
    assert [x["name"] for x in cli("policy", "list", "--tenant", "contoso")] == ["pol"]
    assert "healthy" in cli.human("policy", "show", "pol")
    before = snapshot(cli.rt)
    errors = [
        (
            ("policy", "create", "contoso", "pol", "--region", "eu", "--vault", "cust", "--key", "cmk"),
            "policy_exists",
            4,
        ),
        (
            ("policy", "create", "contoso", "p2", "--region", "nowhere", "--vault", "cust", "--key", "cmk"),
            "invalid_region",
            2,
        ),
        (
            ("policy", "create", "contoso", "p2", "--region", "eu", "--vault", "ghost", "--key", "cmk"),
            "vault_not_found",
            3,
        ),
        (("policy", "show", "ghost"), "policy_not_found", 3),
        (("policy", "health", "ghost"), "policy_not_found", 3),
    ]
    for args, code, exit_code in errors:
        assert cli(*args, code=exit_code)["code"] == code
        assert snapshot(cli.rt) == before
    u = cli("policy", "update", "pol", "--key", "cmk", "--key-version", "1")
    assert u["key_version"] == "1" and u["health"] == "undetermined"
    assert cli("policy", "delete", "pol")["state"] == "deleted"
    assert cli("policy", "list") == []
