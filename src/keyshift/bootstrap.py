"""`keyshift init`: create (or upgrade) a state home.

Creates the home directory and home.json, brings the state database schema to head, and — owned
by the local-vault part — the master key file (0600) and the platform vault with its platform KEK.
Idempotent: running it again on an initialised home only upgrades the schema.
"""

from __future__ import annotations

from pathlib import Path

from keyshift.clock import SystemClock
from keyshift.config import HOME_FILE, HomeInfo, Settings
from keyshift.db import schema
from keyshift.db.engine import make_engine


def init_home(
    home: str | Path,
    *,
    database_url: str | None = None,
    allow_fake_clock: bool = False,
) -> dict[str, object]:
    settings = Settings(home=Path(home), database_url=database_url)
    path = settings.home_path()
    created = not (path / HOME_FILE).exists()
    if created:
        HomeInfo.write(path, allow_fake_clock=allow_fake_clock, created_at=SystemClock().now().isoformat())
    engine = make_engine(settings.resolved_database_url())
    try:
        schema.upgrade(engine)
    finally:
        engine.dispose()
    return {"home": str(path), "created": created, "schema": schema.head_revision()}
