"""CLI: `env feature disable` — JSON output, exit codes, state unchanged on refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from control_support import Cli, snapshot

from keyshift.runtime import Runtime


@pytest.fixture
def cli(rt: Runtime, home: Path, db_url: str | None) -> Cli:
    return Cli(rt, home, db_url)


def test_feature_disable(cli: Cli) -> None:
    cli("tenant", "create", "t")
    cli("env", "create", "t", "e1")
    assert cli("env", "feature", "enable", "e1", "audit")["features"] == ["audit"]
    before = snapshot(cli.rt)
    for args, code, exit_code in (
        (("env", "feature", "disable", "e1", "nope"), "invalid_feature", 2),
        (("env", "feature", "disable", "e1", "search"), "feature_not_enabled", 4),
        (("env", "feature", "disable", "ghost", "audit"), "environment_not_found", 3),
    ):
        assert cli(*args, code=exit_code)["code"] == code
        assert snapshot(cli.rt) == before
    assert cli("env", "feature", "disable", "e1", "audit")["features"] == []
