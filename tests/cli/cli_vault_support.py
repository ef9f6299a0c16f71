"""A small CLI driver for the vault/key/init CLI tests (not a test module)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "vaults"))

from keyshift.cli.main import app


class VaultCli:
    """Runs `keyshift --home H [--database-url U] --json ...` in-process and checks the contract."""

    def __init__(self, home: Path, db_url: str | None) -> None:
        self.home, self.db_url = home, db_url
        self.runner = CliRunner()

    def raw(self, *args: str, as_json: bool = True) -> Any:
        base = ["--home", str(self.home)] + (["--json"] if as_json else [])
        if self.db_url:
            base += ["--database-url", self.db_url]
        return self.runner.invoke(app, [*base, *args], env={"KEYSHIFT_NOW": ""})

    def __call__(self, *args: str, code: int = 0) -> Any:
        res = self.raw(*args)
        assert res.exit_code == code, (args, res.exit_code, res.stdout, res.stderr)
        if code == 0:
            return json.loads(res.stdout)
        assert res.stdout == ""
        err = json.loads(res.stderr)
        assert set(err) == {"error"} and set(err["error"]) == {"code", "message"}
        return err["error"]
