"""Fixtures for the control-plane tests: `ctl` = the `rt` runtime (SQLite and PostgreSQL) with the
platform vault present, plus table snapshots for "state unchanged" checks."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from control_support import ensure_platform_vault, snapshot

from keyshift.runtime import Runtime


@pytest.fixture
def ctl(rt: Runtime) -> Runtime:
    ensure_platform_vault(rt)
    return rt


@pytest.fixture
def sqlite_ctl(sqlite_rt: Runtime) -> Runtime:
    ensure_platform_vault(sqlite_rt)
    return sqlite_rt


@pytest.fixture
def snap(ctl: Runtime) -> Callable[..., Any]:
    def take(*tables: str) -> Any:
        return snapshot(ctl, *tables)

    return take
