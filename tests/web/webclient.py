"""TestClient helpers for admin-center tests that run on SQLite and PostgreSQL (the `rt` fixture):
sign in with a token, read the CSRF token and alerts out of a page."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.control import tokens
from keyshift.runtime import Runtime


def client_for(rt: Runtime) -> Iterator[TestClient]:
    """Body of each test module's `web` fixture (a TestClient over `rt`, whose backend varies)."""
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        yield c


def sign_in(client: TestClient, token: str) -> str:
    """Sign in (cookies replaced) and return the session's CSRF token."""
    client.cookies.clear()
    form = client.get("/login").text
    found = re.search(r'name="login_csrf" value="([^"]+)"', form)
    assert found
    r = client.post("/login", data={"token": token, "login_csrf": found.group(1)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    return csrf_of(client.get("/environments").text)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, "page has no form with a CSRF token"
    return found.group(1)


def alert(page: str) -> str:
    found = re.search(r'role="alert"[^>]*>(.*?)</p>', page, re.S)
    assert found, "page shows no alert"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def token(rt: Runtime, role: str, tenant: str | None = None, **kw: Any) -> str:
    return str(tokens.create_token(rt, role, tenant=tenant, **kw)["token"])
