"""Fixtures for the control-plane tests.

Setting up a home (schema, master key, platform vault and key) costs about a second, so these tests
share one home per backend (SQLite, PostgreSQL) for the session, and `rt` resets it before each test
to exactly the rows `keyshift init` left (every table emptied, the initial rows put back). Each test
still starts from a freshly initialised state and gets its own Runtime and FixedClock.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

sys.path.insert(0, str(Path(__file__).parent))

from control_support import snapshot

from keyshift.bootstrap import init_home
from keyshift.clock import FixedClock
from keyshift.db.models import Base
from keyshift.runtime import Runtime

PG_BASE = os.environ.get("KEYSHIFT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
Baseline = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="session")
def _ctl_pg_url() -> Iterator[str]:
    name = f"ks_ctl_{secrets.token_hex(5)}"
    try:
        admin = create_engine(PG_BASE, connect_args={"connect_timeout": 3})
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    except Exception as exc:
        pytest.skip(f"PostgreSQL at {PG_BASE} unreachable: {type(exc).__name__}")
    sep = "&" if "?" in PG_BASE else "?"
    yield f"{PG_BASE}{sep}options=-csearch_path%3D{name}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


def _tables(engine: Engine) -> list[Any]:
    present = set(inspect(engine).get_table_names())
    return [t for t in Base.metadata.sorted_tables if t.name in present]


def reset_to(engine: Engine, baseline: Baseline) -> None:
    """Every table back to `baseline`. The admin audit trail is append-only in the database (a
    trigger refuses DELETE), so the test reset lifts that guard for its own transaction only."""
    tables = _tables(engine)
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        triggers = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'admin_audit'"
        guards = [] if pg else [(name, sql) for name, sql in conn.execute(text(triggers))]
        if pg:
            conn.execute(text("ALTER TABLE admin_audit DISABLE TRIGGER USER"))
        for name, _ in guards:
            conn.execute(text(f'DROP TRIGGER "{name}"'))
        for t in reversed(tables):
            conn.execute(t.delete())
        for t in tables:
            if baseline.get(t.name):
                conn.execute(t.insert(), baseline[t.name])
        for _, sql in guards:
            conn.execute(text(sql))
        if pg:
            conn.execute(text("ALTER TABLE admin_audit ENABLE TRIGGER USER"))


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def ctl_home(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str | None, Baseline]:
    url = request.getfixturevalue("_ctl_pg_url") if request.param == "postgres" else None
    path = tmp_path_factory.mktemp(f"ctl-{request.param}") / "home"
    init_home(path, database_url=url, allow_fake_clock=True)
    with Runtime.open(home=path, database_url=url) as runtime, runtime.engine.connect() as conn:
        baseline = {
            t.name: [dict(r) for r in conn.execute(t.select()).mappings()] for t in _tables(runtime.engine)
        }
    return path, url, baseline


@pytest.fixture
def db_url(ctl_home: tuple[Path, str | None, Baseline]) -> str | None:
    return ctl_home[1]


@pytest.fixture
def home(ctl_home: tuple[Path, str | None, Baseline]) -> Path:
    return ctl_home[0]


@pytest.fixture
def rt(ctl_home: tuple[Path, str | None, Baseline], clock: FixedClock) -> Iterator[Runtime]:
    path, url, baseline = ctl_home
    runtime = Runtime.open(home=path, database_url=url, clock=clock, principal="operator:test")
    reset_to(runtime.engine, baseline)
    yield runtime
    runtime.close()


@pytest.fixture
def ctl(rt: Runtime) -> Runtime:
    return rt


@pytest.fixture
def snap(ctl: Runtime) -> Callable[..., Any]:
    def take(*tables: str) -> Any:
        return snapshot(ctl, *tables)

    return take
