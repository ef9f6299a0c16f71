"""The admin audit trail page and its API route (TestClient, SQLite and PostgreSQL): newest first,
filters, keyset pages that stay put while events arrive, and tenant scoping that leaks nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyshift.clock import FixedClock
from keyshift.control import environments, tenants
from keyshift.runtime import Runtime

from .webclient import alert, client_for, sign_in, token


@pytest.fixture
def web(rt: Runtime) -> Iterator[TestClient]:
    yield from client_for(rt)


def _world(rt: Runtime) -> dict[str, Any]:
    a = tenants.create_tenant(rt, "alpha")
    b = tenants.create_tenant(rt, "beta")
    ae = environments.create_environment(rt, a["id"], "alpha-prod")
    ae2 = environments.create_environment(rt, a["id"], "alpha-dev")
    be = environments.create_environment(rt, b["id"], "beta-prod")
    return {"a": a, "b": b, "ae": ae, "ae2": ae2, "be": be}


def _api(web: TestClient, tok: str, **params: Any) -> Any:
    return web.get("/api/v1/audit-trail/events", params=params, headers={"Authorization": f"Bearer {tok}"})


def _rows(page: str) -> list[str]:
    return re.findall(r'data-event-id="(\d+)"', page)


def test_tenant_admin_sees_only_its_tenant_and_other_tenants_answer_as_missing(
    web: TestClient, rt: Runtime
) -> None:
    w = _world(rt)
    sign_in(web, token(rt, "tenant_admin", "alpha"))
    page = web.get("/audit").text
    assert "environment.create" in page and "alpha-prod" in page
    for secret in ("beta-prod", w["be"]["id"], w["b"]["id"], "beta"):
        assert secret not in page, secret
    # Naming the other tenant, or its environment, in a filter: 404 like something that is not there.
    for params in ({"tenant": w["b"]["id"]}, {"environment": "beta-prod"}, {"tenant": "nosuch"}):
        r = web.get("/audit", params=params)
        assert r.status_code == 404, params
        sent = next(iter(params.values()))
        unsent = {w["be"]["id"], w["b"]["id"], "beta-prod"} - {sent}
        assert not _rows(r.text) and not [x for x in unsent if x in r.text]  # echoes only what it got
    missing = web.get("/audit", params={"environment": "nosuch"})
    other = web.get("/audit", params={"environment": "beta-prod"})
    assert alert(missing.text).replace("nosuch", "X") == alert(other.text).replace("beta-prod", "X")
    # The API route: same scoping; the operator sees both tenants.
    admin = token(rt, "tenant_admin", "alpha")
    events = _api(web, admin, limit=500).json()["events"]
    assert events and {e["tenant"]["id"] for e in events} == {w["a"]["id"]}
    assert _api(web, admin, tenant="beta").status_code == 404
    op_events = _api(web, token(rt, "operator"), limit=500).json()["events"]
    assert {w["a"]["id"], w["b"]["id"]} <= {e["tenant"]["id"] for e in op_events if e["tenant"]}
    # Readers: a tenant's reader like its admin; a global reader sees every tenant.
    scoped = _api(web, token(rt, "reader", "alpha"), limit=500).json()["events"]
    assert scoped and {e["tenant"]["id"] for e in scoped} == {w["a"]["id"]}
    unscoped = _api(web, token(rt, "reader"), limit=500).json()["events"]
    assert {w["a"]["id"], w["b"]["id"]} <= {e["tenant"]["id"] for e in unscoped if e["tenant"]}
    # A service token may not read the control plane: the documented 403.
    svc = token(rt, "service", envs=[w["ae"]["id"]])
    r = _api(web, svc)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"


def test_filters_return_the_right_rows(web: TestClient, rt: Runtime, clock: FixedClock) -> None:
    w = _world(rt)
    t0 = clock.now()
    clock.advance(hours=1)
    environments.set_managed(rt, "alpha-prod", True)
    environments.enable_feature(rt, "alpha-dev", "audit")
    clock.advance(hours=1)
    environments.set_managed(rt, "alpha-dev", True)
    op = token(rt, "operator")

    def actions(**params: Any) -> list[tuple[str, str | None]]:
        r = _api(web, op, limit=500, **params)
        assert r.status_code == 200, r.text
        return [(e["action"], e["target"]["name"]) for e in r.json()["events"]]

    assert actions(environment="alpha-prod") == [
        ("environment.managed.enable", "alpha-prod"),
        ("environment.create", "alpha-prod"),
    ]
    assert actions(action="environment.managed.*") == [
        ("environment.managed.enable", "alpha-dev"),
        ("environment.managed.enable", "alpha-prod"),
    ]
    assert actions(action="environment.feature.enable") == [("environment.feature.enable", "alpha-dev")]
    since, until = (t0 + timedelta(minutes=30)).isoformat(), (t0 + timedelta(minutes=90)).isoformat()
    assert actions(since=since, until=until) == [
        ("environment.feature.enable", "alpha-dev"),
        ("environment.managed.enable", "alpha-prod"),
    ]
    assert {a for a, _ in actions(tenant="beta")} == {"tenant.create", "environment.create"}
    assert actions(actor="operator:test", tenant="beta") == actions(tenant="beta")
    assert actions(actor="nobody-like-this") == []
    # The request log is left out unless asked for.
    assert "api.request" not in {a for a, _ in actions()}
    assert "api.request" in {a for a, _ in actions(include_requests="true")}
    # The page applies the same filters.
    sign_in(web, op)
    page = web.get("/audit", params={"environment": "alpha-prod"}).text
    assert len(_rows(page)) == 2 and "environment.managed.enable" in page
    assert w["be"]["id"] not in page


def test_bad_filters_say_what_is_wrong_without_echoing_it(web: TestClient, rt: Runtime) -> None:
    _world(rt)
    sign_in(web, token(rt, "operator"))
    r = web.get("/audit", params={"since": "yesterday<b>"})
    assert r.status_code == 400
    assert alert(r.text) == "since is not an ISO 8601 time (invalid_time)"  # the message echoes nothing
    assert 'value="yesterday&lt;b&gt;"' in r.text and "<b>" not in r.text  # the form keeps it, escaped
    r = web.get("/audit", params={"since": "2026-02-01T00:00Z", "until": "2026-01-01T00:00Z"})
    assert r.status_code == 400 and "since must be earlier than until" in alert(r.text)
    r = _api(web, token(rt, "operator"), before=5, after=1, include_requests="true")
    between = [e["id"] for e in r.json()["events"]]  # both cursors: the events between, newest first
    assert r.status_code == 200 and between == [4, 3, 2], between
    assert _api(web, token(rt, "operator"), limit=0).status_code == 422


def test_pages_are_keyset_and_do_not_shift_while_events_arrive(web: TestClient, rt: Runtime) -> None:
    _world(rt)
    for i in range(30):
        environments.set_managed(rt, "alpha-prod", i % 2 == 0)
    op = token(rt, "operator")
    first = _api(web, op, limit=10, action="environment.managed.*").json()
    ids = [e["id"] for e in first["events"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 10 and first["prev_after"] is None
    # New events arrive between page requests: the next page continues exactly where it stopped.
    for i in range(5):
        environments.set_managed(rt, "alpha-dev", i % 2 == 0)
    seen = list(ids)
    cursor = first["next_before"]
    while cursor is not None:
        page = _api(web, op, limit=10, before=cursor, action="environment.managed.*").json()
        seen += [e["id"] for e in page["events"]]
        cursor = page["next_before"]
    assert len(seen) == len(set(seen)) == 30  # the 30 events that existed; no gap, no repeat
    assert seen == sorted(seen, reverse=True)
    # Going back (newer) from the second page gives the first page again, then the 5 new ones.
    second = _api(web, op, limit=10, before=first["next_before"], action="environment.managed.*").json()
    back = _api(web, op, limit=10, after=second["prev_after"], action="environment.managed.*").json()
    assert [e["id"] for e in back["events"]] == ids
    newest = _api(web, op, limit=10, after=back["prev_after"], action="environment.managed.*").json()
    assert len(newest["events"]) == 5 and newest["prev_after"] is None
    # The page links carry the cursor and the filters (55 events: a full page of 50, then 5).
    for i in range(20):
        environments.set_managed(rt, "alpha-dev", i % 2 == 0)
    sign_in(web, op)
    html = web.get("/audit", params={"action": "environment.managed.*"}).text
    older = re.search(r'href="(/audit\?[^"]+)" rel="next"', html)
    assert older and "before=" in older.group(1) and "action=environment.managed" in older.group(1)
    nxt = web.get(older.group(1).replace("&amp;", "&")).text
    assert len(_rows(html)) == 50 and len(_rows(nxt)) == 5 and set(_rows(nxt)).isdisjoint(_rows(html))
