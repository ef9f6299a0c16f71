"""Run the installed `keyshift` command the way a person does: a subprocess, with argv and stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent / "keyshift"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def error(self) -> dict[str, str]:
        return json.loads(self.err)["error"]  # type: ignore[no-any-return]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSHIFT_")}
    env.update({"COLUMNS": "80", **extra})
    return env


def ks(
    *args: str,
    stdin: str | bytes | None = None,
    env: dict[str, str] | None = None,
    module: bool = False,
    timeout: float = 120,
    cwd: Path | None = None,
) -> Result:
    cmd = [sys.executable, "-m", "keyshift"] if module else [str(BIN)]
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [*cmd, *args],
        input=data,
        capture_output=True,
        env=env if env is not None else clean_env(),
        timeout=timeout,
        cwd=cwd,
    )
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
