"""Helpers shared by the control-plane tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, select, text

from keyshift.db.models import AdminAuditEvent
from keyshift.runtime import Runtime

# The admin audit trail is left out: refusals are recorded there, on purpose.
NOT_STATE = {"admin_audit", "alembic_version"}


def snapshot(rt: Runtime, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the given tables (default: every table of the state DB except the admin audit
    trail: control plane, local vault keys, DEKs, data, jobs...), ordered, for equality."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with rt.engine.connect() as conn:
        names = tables or tuple(sorted(set(inspect(conn).get_table_names()) - NOT_STATE))
        for t in names:
            rows = conn.execute(text(f'SELECT * FROM "{t}"')).all()
            out[t] = sorted((tuple(str(c) for c in r) for r in rows), key=repr)
    return out


def audit_rows(rt: Runtime, action: str | None = None) -> list[AdminAuditEvent]:
    with rt.transaction() as s:
        stmt = select(AdminAuditEvent).order_by(AdminAuditEvent.id)
        if action:
            stmt = stmt.where(AdminAuditEvent.action == action)
        rows = list(s.scalars(stmt))
        for r in rows:
            s.expunge(r)
        return rows


class Cli:
    """Runs `keyshift --json ...` in-process (typer's CliRunner) against one home.

    Returns the parsed JSON on success; on failure asserts the exit code, an empty stdout and the
    documented error shape on stderr, and returns the error object.
    """

    def __init__(self, rt: Runtime, home: Any, db_url: str | None) -> None:
        from typer.testing import CliRunner

        self.rt, self.home, self.db_url = rt, home, db_url
        self.runner = CliRunner()

    def base(self) -> list[str]:
        return ["--home", str(self.home)] + (["--database-url", self.db_url] if self.db_url else [])

    def __call__(self, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
        import json

        from keyshift.cli.main import app

        res = self.runner.invoke(
            app, [*self.base(), "--json", *args], env={"KEYSHIFT_NOW": "", **(env or {})}
        )
        assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
        if code == 0:
            return json.loads(res.stdout)
        assert res.stdout == ""
        err = json.loads(res.stderr)["error"]
        assert set(err) == {"code", "message"}
        return err

    def human(self, *args: str) -> str:
        from keyshift.cli.main import app

        res = self.runner.invoke(app, [*self.base(), *args], env={"KEYSHIFT_NOW": ""})
        assert res.exit_code == 0, (res.exit_code, res.stdout, res.stderr)
        return str(res.stdout)
