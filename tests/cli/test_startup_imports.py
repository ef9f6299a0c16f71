"""CLI start-up imports only what the command uses (checked with `python -X importtime`).

Timings belong to bench/bench_cli.py; this checks the cause deterministically: `--help` loads no
command module and no database stack, `data get` loads no Alembic, Rich, web stack or pyarrow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from subproc import clean_env, ks


def _imported(*args: str, env: dict[str, str] | None = None) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keyshift", *args],
        capture_output=True,
        env=env or clean_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    names = set()
    for line in proc.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_help_imports_no_command_module_and_no_database_stack() -> None:
    names = _imported("--help")
    assert "typer" in _top(names)  # the check sees imports at all
    assert not {"sqlalchemy", "alembic", "rich", "fastapi", "pyarrow", "pydantic_settings"} & _top(names)
    assert not {n for n in names if n.startswith("keyshift.cli.") and n not in _ALLOWED_FOR_HELP}


_ALLOWED_FOR_HELP = {
    "keyshift.cli.main",
    "keyshift.cli.common",
    "keyshift.cli.clicklib",
    "keyshift.cli.help_style",
}


def test_data_get_imports_only_the_data_path(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    env = clean_env(KEYSHIFT_HOME=home)
    for args in (
        ["init"],
        ["tenant", "create", "t"],
        ["env", "create", "t", "e"],
        ["data", "put", "e", "x", "1", "{}"],
    ):
        assert ks(*args, env=env).code == 0
    names = _imported("data", "get", "e", "x", "1", env=env)
    assert "sqlalchemy" in _top(names)  # it did open the database
    heavy = {"alembic", "rich", "fastapi", "uvicorn", "starlette", "pyarrow", "boto3", "botocore", "httpx"}
    assert not heavy & _top(names)
    # vault client libraries load only for a key that lives in that vault (this one is the local one)
    assert not {"hvac", "azure", "google", "kmip", "pkcs11", "PyKCS11"} & _top(names)
    # an AES key unwrap needs no RSA or key (de)serialisation (the local vault loads them on RSA use)
    assert (
        not {"cryptography.hazmat.primitives.serialization", "cryptography.hazmat.primitives.asymmetric.rsa"}
        & names
    )
    assert not {"keyshift.cli.features", "keyshift.cli.policy", "keyshift.features", "keyshift.api"} & names
