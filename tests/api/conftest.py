"""API fixtures: an app over the `rt` runtime, a TestClient, and tokens per role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.control import tokens
from keyshift.runtime import Runtime


@pytest.fixture
def app(rt: Runtime) -> Any:
    return create_app(rt)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def operator_token(rt: Runtime) -> str:
    return str(tokens.create_token(rt, "operator", label="test operator")["token"])
