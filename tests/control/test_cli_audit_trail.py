"""CLI: `audit-trail [--tenant T] [--since TIME]` — who, what, when, outcome (refusals too)."""

from __future__ import annotations

from pathlib import Path

import pytest
from control_support import Cli

from keyshift.runtime import Runtime


@pytest.fixture
def cli(rt: Runtime, home: Path, db_url: str | None) -> Cli:
    return Cli(rt, home, db_url)


def test_audit_trail_lists_changes_and_refusals_per_tenant(cli: Cli) -> None:
    t = cli("tenant", "create", "contoso")
    cli("tenant", "create", "other")
    cli("env", "create", "contoso", "e1")
    cli("env", "create", "contoso", "e1", code=4)  # refused: recorded too
    cli("env", "feature", "enable", "e1", "search")
    rows = cli("audit-trail", "--tenant", "contoso")
    # (the data plane's feature hook adds its own key rows, e.g. dek.create: not ours to check here)
    mine = [r for r in rows if r["action"].startswith(("tenant.", "environment."))]
    # newest first (CLI convention)
    assert [(r["action"], r["outcome"]) for r in mine] == [
        ("environment.feature.enable", "ok"),
        ("environment.create", "error"),
        ("environment.create", "ok"),
        ("tenant.create", "ok"),
    ]
    assert all(r["tenant"] == {"id": t["id"], "name": t["name"]} for r in rows)
    assert all(r["principal"].startswith("operator:cli:") and r["at"] for r in rows)
    assert "environment_exists" in mine[1]["reason"]
    assert cli("audit-trail", "--tenant", t["id"]) == rows
    everything = cli("audit-trail")
    assert len(everything) > len(rows)
    assert cli("audit-trail", "--since", "2999-01-01T00:00:00Z") == []
    assert cli("audit-trail", "--tenant", "contoso", "--since", rows[-1]["at"]) == rows
    assert cli("audit-trail", "--since", "yesterday", code=2)["code"] == "invalid_argument"
    assert cli("audit-trail", "--tenant", "ghost", code=3)["code"] == "tenant_not_found"
    assert cli("audit-trail", "--limit", "0", code=2)["code"] == "invalid_limit"
    human = cli.human("audit-trail", "--tenant", "contoso")
    assert "action" in human and "outcome" in human and "error" in human
