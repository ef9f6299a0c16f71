"""Fixtures for the data-plane tests.

Setting up a home (schema, master key, platform vault and KEK) costs about a second, so most tests
here share one home per backend for the whole session (`rt` below overrides the root fixture) and
isolate themselves by creating their own tenant and environment (`make_env` names are unique).
Each test still gets its own Runtime (own DEK cache, state snapshots, FixedClock). Tests that
change shared key state (disable the platform key, revoke its grant) use `fresh_rt`: a home of
their own, exactly like the root `rt` fixture.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from keyshift.bootstrap import init_home
from keyshift.clock import FixedClock
from keyshift.runtime import Runtime
from servers import moto_endpoint  # noqa: F401 - fixture used by this folder

PG_BASE = os.environ.get("KEYSHIFT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_url(name: str) -> str:
    sep = "&" if "?" in PG_BASE else "?"
    return f"{PG_BASE}{sep}options=-csearch_path%3D{name}"


@pytest.fixture(scope="session")
def _pg_schema() -> Iterator[str]:
    try:
        admin = create_engine(PG_BASE, connect_args={"connect_timeout": 3})
        with admin.begin() as conn:
            name = f"ks_data_{secrets.token_hex(5)}"
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    except Exception as exc:
        pytest.skip(f"PostgreSQL at {PG_BASE} unreachable: {type(exc).__name__}")
    yield _pg_url(name)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def shared_home(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str | None]:
    url = request.getfixturevalue("_pg_schema") if request.param == "postgres" else None
    path = tmp_path_factory.mktemp(f"shared-{request.param}") / "home"
    init_home(path, database_url=url, allow_fake_clock=True)
    return path, url


@pytest.fixture
def db_url(shared_home: tuple[Path, str | None]) -> str | None:
    return shared_home[1]


@pytest.fixture
def rt(shared_home: tuple[Path, str | None], clock: FixedClock) -> Iterator[Runtime]:
    path, url = shared_home
    runtime = Runtime.open(home=path, database_url=url, clock=clock, principal="operator:test")
    yield runtime
    runtime.close()


@pytest.fixture
def fresh_rt(tmp_path: Path, shared_home: tuple[Path, str | None], clock: FixedClock) -> Iterator[Runtime]:
    """A runtime on a home of its own (same backend as the shared one) for tests that change keys."""
    url = shared_home[1]
    if url is not None:
        name = f"ks_{secrets.token_hex(6)}"
        admin = create_engine(PG_BASE)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        url = _pg_url(name)
    path = tmp_path / "home"
    init_home(path, database_url=url, allow_fake_clock=True)
    runtime = Runtime.open(home=path, database_url=url, clock=clock, principal="operator:test")
    yield runtime
    runtime.close()
    if url is not None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shared-sqlite-only") / "home"
    init_home(path, allow_fake_clock=True)
    return path


@pytest.fixture
def sqlite_rt(sqlite_home: Path, clock: FixedClock) -> Iterator[Runtime]:
    """A shared SQLite home, for tests whose subject is not the SQL backend (they run once)."""
    runtime = Runtime.open(home=sqlite_home, clock=clock, principal="operator:test")
    yield runtime
    runtime.close()
