"""The lazy command table in keyshift.cli.main stays in step with what the modules register.

For every top-level command, loading only the modules the table names (in a fresh process) must give
the same command tree as loading every module; and every registered command is in the table.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keyshift.cli.main import COMMANDS

SCRIPT = """
import json, sys
from keyshift.cli import main as m
name = sys.argv[1] if len(sys.argv) > 1 else None
group = m.load_commands(name)
def tree(cmd):
    subs = getattr(cmd, "commands", None)
    return {k: tree(v) for k, v in sorted(subs.items())} if subs is not None else None
print(json.dumps(tree(group)))
"""


def _tree(name: str | None = None) -> dict[str, object]:
    args = [sys.executable, "-c", SCRIPT] + ([name] if name else [])
    proc = subprocess.run(args, capture_output=True, timeout=120, check=True)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def full() -> dict[str, object]:
    return _tree()


def test_every_registered_command_is_in_the_table(full: dict[str, object]) -> None:
    assert set(full) == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_command_loaded_alone_is_complete(name: str, full: dict[str, object]) -> None:
    assert _tree(name)[name] == full[name]
