"""Shared fixtures: a fresh state home on SQLite and on PostgreSQL, and an injectable clock.

PostgreSQL tests run in a throwaway schema per test (search_path), so parallel runs never meet.
If PostgreSQL is unreachable those tests are skipped with the reason printed (-ra).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from keyshift.bootstrap import init_home
from keyshift.clock import FixedClock
from keyshift.runtime import Runtime

PG_BASE = os.environ.get("KEYSHIFT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Worker processes the tests start run at normal priority: tests time cross-process bounds (a
# revocation seen within 2 s) on a machine the test processes themselves keep busy.
# tests/jobs/test_priority.py checks the default niceness.
os.environ.setdefault("KEYSHIFT_WORKER_NICE", "0")


def _pg_reason() -> str | None:
    try:
        eng = create_engine(PG_BASE, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL at {PG_BASE} unreachable: {type(exc).__name__}"


_PG_SKIP: str | bool | None = False


@pytest.fixture(autouse=True)
def _logging_as_found() -> Iterator[None]:
    """A CLI command run in-process (`worker`, `serve`) configures Keyshift's log handler; undo it
    after each test so one test's set-up never writes into another's captured streams."""
    yield
    from keyshift.observability import logs

    logs.reset()


def pg_skip_reason() -> str | None:
    global _PG_SKIP
    if _PG_SKIP is False:
        _PG_SKIP = _pg_reason()
    return _PG_SKIP  # type: ignore[return-value]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL pointing at a fresh, empty schema; dropped afterwards."""
    reason = pg_skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"ks_{secrets.token_hex(6)}"
    admin = create_engine(PG_BASE)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in PG_BASE else "?"
    yield f"{PG_BASE}{sep}options=-csearch_path%3D{name}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """None means the home's default SQLite file; "postgres" gives a fresh schema URL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")  # type: ignore[no-any-return]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))


@pytest.fixture
def home(tmp_path: Path, db_url: str | None) -> Path:
    path = tmp_path / "home"
    init_home(path, database_url=db_url, allow_fake_clock=True)
    return path


@pytest.fixture
def rt(home: Path, db_url: str | None, clock: FixedClock) -> Iterator[Runtime]:
    runtime = Runtime.open(home=home, database_url=db_url, clock=clock, principal="operator:test")
    yield runtime
    runtime.close()


@pytest.fixture
def sqlite_rt(tmp_path: Path, clock: FixedClock) -> Iterator[Runtime]:
    """A runtime on SQLite only, for tests whose subject is not the SQL backend."""
    path = tmp_path / "home-sqlite"
    init_home(path, allow_fake_clock=True)
    runtime = Runtime.open(home=path, clock=clock, principal="operator:test")
    yield runtime
    runtime.close()
