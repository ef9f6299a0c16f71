"""The README's "Using it" commands run verbatim, as a shell script, in a clean directory (with the
project's .venv), and again with `python -m keyshift` in place of `keyshift`; then its Python example."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def _block(lang: str) -> str:
    text = README.read_text()
    section = text[text.index("## Using it") :]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert match, f"no ```{lang} block in README's Using it"
    return match.group(1)


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    work = tmp_path / "clone"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))  # the venv `make venv` built
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSHIFT_")}
    env.update(HOME=str(tmp_path / "userhome"), PATH="/usr/bin:/bin")
    (tmp_path / "userhome").mkdir()
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _check(proc: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads(proc.stdout[proc.stdout.rindex("\n{") :])
    assert shown["name"] == "contoso-prod" and shown["region"] == "europe"
    assert shown["type"] == "production"
    home = tmp_path / "userhome" / "keyshift-try"
    assert (home / "master.key").exists()  # the home went where the README says, outside the tree
    assert not (tmp_path / "clone" / ".keyshift-home").exists()


def test_readme_using_it_runs_verbatim(tmp_path: Path) -> None:
    script = _block("sh")
    proc = _run(script, tmp_path)
    _check(proc, tmp_path)
    # The README's Python example, against the home the commands made.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSHIFT_")}
    env["KEYSHIFT_HOME"] = str(tmp_path / "userhome" / "keyshift-try")
    out = subprocess.run(
        [sys.executable, "-c", _block("python")], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # get, then the scan of the whole table (its one record: id and value)
    assert out.stdout.strip().splitlines() == ["{'name': 'Fabrikam'}", "a1 {'name': 'Fabrikam'}"]


def test_readme_commands_with_python_dash_m(tmp_path: Path) -> None:
    script = re.sub(r"(?m)^keyshift ", "python -m keyshift ", _block("sh"))
    assert script.count("python -m keyshift ") == 5
    _check(_run(script, tmp_path), tmp_path)


@pytest.mark.parametrize("path", ["README.md", "docs"])
def test_repository_stands_alone(path: str) -> None:
    root = Path(__file__).parents[2]
    files = [root / path] if path.endswith(".md") else sorted((root / path).glob("*.md"))
    for f in files:
        text = f.read_text()
        assert "../shared" not in text and "SPEC" not in text, f
