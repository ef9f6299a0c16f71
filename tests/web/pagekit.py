"""Helpers for admin-center tests without a browser: sign in, read a form's CSRF token, audit rows."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from keyshift.db.models import AdminAuditEvent
from keyshift.runtime import Runtime


def login(client: TestClient, token: str) -> None:
    client.cookies.clear()
    form = client.get("/login").text
    found = re.search(r'name="login_csrf" value="([^"]+)"', form)
    assert found
    r = client.post("/login", data={"token": token, "login_csrf": found.group(1)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "page has no form with a CSRF token"
    return found.group(1)


def audit(rt: Runtime, action: str) -> list[AdminAuditEvent]:
    with rt.transaction() as s:
        rows = list(s.scalars(select(AdminAuditEvent).where(AdminAuditEvent.action == action)))
        for r in rows:
            s.expunge(r)
    return rows


def flash_of(html: str) -> str | None:
    found = re.search(r'<p class="flash" id="flash" role="status">([^<]*)</p>', html)
    return found.group(1) if found else None


def back_link_of(html: str) -> str | None:
    found = re.search(r'<a id="error-back" href="([^"]+)"', html)
    return found.group(1) if found else None


def follow(client: TestClient, r: Any) -> Any:
    """Follow a 303 from a form action and return the page it lands on."""
    assert r.status_code == 303, (r.status_code, r.text[:300])
    return client.get(r.headers["location"])
