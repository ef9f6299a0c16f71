"""Schema management: Alembic migrations shipped inside the package, run programmatically."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from keyshift.errors import ConflictError

_HERE = Path(__file__).parent


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "alembic"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to head. Safe to call on an up-to-date database."""
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def require_current(engine: Engine) -> None:
    """Refuse to run against a database whose schema is not at head."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise ConflictError(
            f"database schema is at {current or 'nothing'}, this Keyshift needs {head}; "
            "run `keyshift init` to upgrade",
            code="schema_out_of_date",
        )
