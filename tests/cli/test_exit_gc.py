"""Run as the program, the CLI freezes the garbage collector on its way out (the interpreter's last
collection would walk every object the imports made); called in-process with argv, it does not."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest
from subproc import clean_env, ks

from keyshift.cli.main import main

_PROBE = (
    "import atexit, gc, sys\n"
    "atexit.register(lambda: sys.stderr.write(f'frozen={gc.get_freeze_count() > 0}\\n'))\n"
    "from keyshift.cli.main import main\n"
    "main()\n"
)


def _probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=120,
    )


def test_the_program_freezes_the_collector_on_the_way_out_and_keeps_its_output(tmp_path: Path) -> None:
    env = clean_env(KEYSHIFT_HOME=str(tmp_path / "h"))
    for args in (["init"], ["tenant", "create", "t"], ["env", "create", "t", "e"]):
        assert ks(*args, env=env).code == 0
    value = '{"name": "Fabrikam", "tags": ["a", "b"], "n": 12345678901234567890}'
    assert ks("data", "put", "e", "x", "1", value, env=env).code == 0
    got = _probe("--json", "data", "get", "e", "x", "1", env=env)
    assert got.returncode == 0, got.stderr
    assert "frozen=True" in got.stderr
    assert json.loads(got.stdout) == json.loads(value)
    missing = _probe("--json", "data", "get", "e", "x", "nope", env=env)  # an error exit too
    assert missing.returncode == 3 and "frozen=True" in missing.stderr
    assert '"record_not_found"' in missing.stderr


def test_an_in_process_call_leaves_the_collector_alone() -> None:
    before = gc.get_freeze_count()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert gc.get_freeze_count() == before
