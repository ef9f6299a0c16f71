"""Schema management: Alembic migrations shipped inside the package, run programmatically."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

from keyshift.errors import ConflictError

if TYPE_CHECKING:
    from alembic.config import Config

_HERE = Path(__file__).parent


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "alembic"))
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@cache
def _quick_head() -> str | None:
    """The single head read straight from the revision files (no Alembic import), else None."""
    revisions: dict[str, tuple[str, ...]] = {}
    for f in (_HERE / "alembic" / "versions").glob("*.py"):
        values: dict[str, object] = {}
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name) and t.id in ("revision", "down_revision"):
                        try:
                            values[t.id] = ast.literal_eval(node.value) if node.value else None
                        except ValueError:
                            return None
        rev, down = values.get("revision"), values.get("down_revision")
        if not isinstance(rev, str):
            return None
        revisions[rev] = (
            tuple(str(d) for d in down) if isinstance(down, tuple | list) else (str(down),) if down else ()
        )
    pointed = {d for downs in revisions.values() for d in downs}
    heads = [r for r in revisions if r not in pointed]
    return heads[0] if len(heads) == 1 else None


def _quick_current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def upgrade(engine: Engine) -> None:
    """Bring the schema to head. Safe to call on an up-to-date database."""
    from alembic import command

    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def require_current(engine: Engine) -> None:
    """Refuse to run against a database whose schema is not at head."""
    head = _quick_head()
    if head is not None:  # fast path: one SELECT, no Alembic import (CLI start-up time)
        try:
            if _quick_current(engine) == head:
                return
        except Exception:  # noqa: S110 - no version table etc.: Alembic below gives the answer
            pass
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise ConflictError(
            f"database schema is at {current or 'nothing'}, this Keyshift needs {head}; "
            "run `keyshift init` to upgrade",
            code="schema_out_of_date",
        )
