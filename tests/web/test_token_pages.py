"""Tokens page (operator only, like the CLI and the API): create shows the token once, list with
role/tenant/state filters, revoke; other roles get the 403 page without data; CSRF is checked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.control import environments, tenants, tokens
from keyshift.errors import AuthenticationError
from keyshift.runtime import Runtime

from .pagekit import audit, back_link_of, csrf_of, flash_of, follow, login


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def world(rt: Runtime) -> dict[str, Any]:
    t = tenants.create_tenant(rt, "contoso")
    env = environments.create_environment(rt, t["id"], "contoso-prod")
    return {
        "tenant": t,
        "env": env,
        "operator": tokens.create_token(rt, "operator")["token"],
        "admin": tokens.create_token(rt, "tenant_admin", tenant="contoso", label="contoso admin"),
        "reader": tokens.create_token(rt, "reader")["token"],
    }


def test_operator_creates_a_token_shown_once_then_lists_filters_and_revokes_it(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    login(client, world["operator"])
    page = client.get("/tokens").text
    assert world["admin"]["id"] in page and "contoso admin" in page
    r = client.post(
        "/tokens",
        data={
            "role": "service",
            "tenant": world["tenant"]["id"],
            "environment": [world["env"]["id"]],
            "label": "etl job",
            "csrf": csrf_of(page),
        },
    )
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    shown = re.search(r'id="new-token" class="secret" readonly value="([^"]+)"', r.text)
    assert shown and "shown only this once" in r.text
    secret_token = shown.group(1)
    principal = tokens.authenticate(rt, secret_token)
    assert principal.role == "service" and principal.env_ids == frozenset({world["env"]["id"]})
    # Never shown again: not on the list page, not in the filtered list.
    secret = secret_token.partition(".")[2]
    listed = client.get("/tokens?role=service").text
    assert principal.token_id in listed and secret not in listed and "contoso-prod" in listed
    assert world["admin"]["id"] not in listed  # filtered by role
    by_tenant = client.get(f"/tokens?tenant={world['tenant']['id']}").text
    assert world["admin"]["id"] in by_tenant and principal.token_id in by_tenant
    assert [e.outcome for e in audit(rt, "token.create") if e.target_id == principal.token_id] == ["ok"]

    r = client.post(
        f"/tokens/{principal.token_id}/revoke", data={"csrf": csrf_of(listed)}, follow_redirects=False
    )
    landed = follow(client, r).text
    assert flash_of(landed) == f"Token {principal.token_id} revoked; it no longer works."
    with pytest.raises(AuthenticationError):
        tokens.authenticate(rt, secret_token)
    assert principal.token_id in client.get("/tokens?state=revoked").text
    assert principal.token_id not in client.get("/tokens?state=active").text


def test_invalid_token_form_shows_the_error_and_creates_nothing(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    login(client, world["operator"])
    page = client.get("/tokens").text
    before = tokens.list_tokens(rt)
    r = client.post("/tokens", data={"role": "service", "csrf": csrf_of(page)})  # no environment
    assert r.status_code == 400 and "a service token needs at least one --env" in r.text
    assert back_link_of(r.text) == "/tokens"
    r = client.post("/tokens", data={"role": "root", "csrf": csrf_of(page)})
    assert r.status_code == 422
    assert tokens.list_tokens(rt) == before


@pytest.mark.parametrize("who", ["admin", "reader"])
def test_other_roles_get_the_403_page_without_any_token_data(
    client: TestClient, rt: Runtime, world: dict[str, Any], who: str
) -> None:
    token = world[who]["token"] if who == "admin" else world[who]
    login(client, token)
    page = client.get("/tokens")
    assert page.status_code == 403 and "permission_denied" in page.text
    assert world["admin"]["id"] not in page.text.replace(tokens.authenticate(rt, token).token_id, "")
    assert back_link_of(page.text) == "/environments"
    assert 'href="/tokens"' not in client.get("/environments").text  # no menu entry either
    before = tokens.list_tokens(rt)
    csrf = csrf_of(client.get("/environments").text)
    assert client.post("/tokens", data={"role": "operator", "csrf": csrf}).status_code == 403
    r = client.post(f"/tokens/{world['admin']['id']}/revoke", data={"csrf": csrf})
    assert r.status_code == 403
    assert tokens.list_tokens(rt) == before


def test_token_forms_without_a_valid_csrf_token_are_refused(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    login(client, world["operator"])
    before = tokens.list_tokens(rt)
    for extra in ({}, {"csrf": "f" * 64}):
        r = client.post("/tokens", data={"role": "operator", **extra})
        assert r.status_code == 403 and "csrf_failed" in r.text
        r = client.post(f"/tokens/{world['admin']['id']}/revoke", data=extra)
        assert r.status_code == 403 and "csrf_failed" in r.text
    assert tokens.list_tokens(rt) == before
