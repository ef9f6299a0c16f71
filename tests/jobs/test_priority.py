"""`keyshift worker` lowers its CPU priority (niceness 10 by default, `--nice`): clients on the same
machine go first. Only ever raised; bad values are refused before anything runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keyshift.cli import worker as worker_cli
from keyshift.cli.main import app
from keyshift.jobs import priority


def _in_child(fn: Any) -> int:
    """Run fn in a forked child (niceness cannot be lowered again) and return its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = int(fn())
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_lower_priority_raises_niceness_and_never_lowers_it() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if base > 12:
        pytest.skip(f"this test process already runs at niceness {base}")

    def raise_then_keep() -> int:
        assert priority.lower_priority(10) == max(10, base)
        assert priority.lower_priority(5) == max(10, base)  # not lowered back
        assert priority.lower_priority(12) == 12
        return 0

    assert _in_child(raise_then_keep) == 0
    assert os.getpriority(os.PRIO_PROCESS, 0) == base
    for bad in (-1, 20):
        with pytest.raises(ValueError):
            priority.lower_priority(bad)


def _invoke(home: Path, *args: str, env: dict[str, str | None]) -> Any:
    return CliRunner().invoke(app, ["--home", str(home), "--json", "worker", "--once", *args], env=env)


def test_the_worker_runs_at_niceness_10_unless_told(sqlite_rt: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    monkeypatch.setattr(worker_cli, "lower_priority", lambda nice: seen.append(nice) or nice)
    home_path = sqlite_rt.home.path
    res = _invoke(home_path, env={"KEYSHIFT_WORKER_NICE": None, "KEYSHIFT_NOW": ""})
    assert res.exit_code == 0, res.stderr
    res = _invoke(home_path, "--nice", "3", env={"KEYSHIFT_WORKER_NICE": None, "KEYSHIFT_NOW": ""})
    assert res.exit_code == 0, res.stderr
    res = _invoke(home_path, env={"KEYSHIFT_WORKER_NICE": "0", "KEYSHIFT_NOW": ""})
    assert res.exit_code == 0, res.stderr
    assert seen == [priority.DEFAULT_NICE, 3, 0]
    res = _invoke(home_path, "--nice", "25", env={"KEYSHIFT_WORKER_NICE": None, "KEYSHIFT_NOW": ""})
    assert res.exit_code == 2 and seen == [10, 3, 0]  # refused before the worker ran
