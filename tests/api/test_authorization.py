"""Authorization tested on EVERY route of the app (API and admin center), built from app.routes.

A tenant admin never sees or touches another tenant: for each route, requests that name the other
tenant's objects (in the path, in the body, or both) are refused with 403/404, leak none of its
identifiers, and change nothing in the database. Readers never change anything; service tokens
reach only the data plane of their granted environments. Operators reach every object (the
positive control that shows the probes address real objects).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import MetaData, select
from starlette.routing import Mount, Route

from keyshift.api.access import DATA_SCOPES
from keyshift.runtime import Runtime

from .routeprobe import Probe, build, send
from .world import World, build_world

# Routes that are not APIRoutes, each allowed for a stated reason.
NON_API_ROUTES = {
    "/openapi.json": "the OpenAPI document is public by design",
    "/static": "static CSS/JS of the admin center, no data",
}


@pytest.fixture
def rt(sqlite_rt: Runtime) -> Runtime:
    """Authorization is not about the SQL backend: SQLite only, to keep the suite fast."""
    return sqlite_rt


@pytest.fixture
def world(rt: Runtime) -> World:
    return build_world(rt)


_REFLECTED: dict[int, MetaData] = {}


def _snapshot(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    md = _REFLECTED.get(id(rt.engine))
    if md is None:
        md = _REFLECTED[id(rt.engine)] = MetaData()
        md.reflect(rt.engine)
    out = {}
    with rt.engine.connect() as conn:
        for name, table in sorted(md.tables.items()):
            if name in ("admin_audit", "alembic_version"):
                continue
            rows = conn.execute(select(table)).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def _probes(app: Any) -> list[tuple[Any, str]]:
    """(route, method) for every route of the app, included routers flattened."""
    out = []
    for rc in iter_route_contexts(app.routes):
        route = rc.original_route
        if isinstance(route, APIRoute):
            out.extend((rc, m) for m in sorted(rc.methods))
        elif isinstance(route, Mount | Route):
            assert rc.path in NON_API_ROUTES, f"route {rc.path} has no access rule"
        else:  # pragma: no cover
            raise AssertionError(f"unexpected route type {type(route).__name__}")
    return out


def _leaks(resp: Any, side_ids: set[str], sent: str = "") -> set[str]:
    """Identifiers in the response that the caller never sent itself (echoing a name the caller
    gave — in a 404 message, or in its own request log — tells it nothing)."""
    text = resp.text
    return {i for i in side_ids if i in text and i not in sent}


def _send(client: Any, app: Any, world: World, probe: Probe, who: str) -> Any:
    return send(client, probe, world.tokens[who], app.state.web_secret, world.token_ids[who])


def test_every_route_declares_one_rule_and_known_parameters(app: Any, world: World) -> None:
    probes = _probes(app)
    assert len(probes) >= 30  # the API is really there
    for route, method in probes:
        build(route, method, world.beta.refs())  # asserts one rule and known parameters


@pytest.mark.parametrize("who", ["alpha_admin", "alpha_reader"])
def test_tenant_scoped_tokens_cannot_see_or_touch_another_tenant_on_any_route(
    app: Any, client: Any, rt: Runtime, world: World, who: str
) -> None:
    beta_ids = world.beta.identifiers()
    checked = 0
    sent = ""
    for route, method in _probes(app):
        variants = [build(route, method, world.beta.refs())]
        mixed = build(route, method, world.beta.refs(), guard_refs=world.alpha.refs())
        if mixed.references:
            variants.append(mixed)
        for probe in variants:
            scope = probe.guard.rule.scope
            sent += repr((probe.path, probe.json, probe.form))
            before = _snapshot(rt)
            resp = _send(client, app, world, probe, who)
            after = _snapshot(rt)
            leaked = _leaks(resp, beta_ids, sent)
            assert not leaked, f"{probe.label} leaked {leaked}"
            if scope == "public":
                continue
            if probe.references or scope in ("operator",):
                assert resp.status_code in (403, 404), (
                    f"{probe.label} -> {resp.status_code} {resp.text[:200]}"
                )
                assert before == after, f"{probe.label} changed state although refused"
            else:
                # Nothing of beta was named: whatever happened may only concern alpha.
                changed = {t for t in before if before[t] != after[t]}
                for t in changed:
                    assert not _leaks_rows(after[t], beta_ids), f"{probe.label} touched beta rows in {t}"
            checked += 1
    assert checked >= 30


def _leaks_rows(rows: list[tuple[Any, ...]], ids: set[str]) -> bool:
    return any(any(isinstance(v, str) and v in ids for v in row) for row in rows)


def test_reader_changes_nothing_on_any_route(app: Any, client: Any, rt: Runtime, world: World) -> None:
    for route, method in _probes(app):
        probe = build(route, method, world.alpha.refs())
        rule = probe.guard.rule
        if not rule.write or rule.scope == "public":
            continue
        before = _snapshot(rt)
        resp = _send(client, app, world, probe, "reader")
        assert resp.status_code == 403, f"{probe.label} -> {resp.status_code}"
        assert _snapshot(rt) == before


def test_service_token_reaches_only_its_environments_data(
    app: Any, client: Any, rt: Runtime, world: World
) -> None:
    own = dict(world.alpha.refs())
    other = dict(world.alpha.refs(), env=world.alpha.env2["id"], environment=world.alpha.env2["id"])
    for route, method in _probes(app):
        rule = build(route, method, own).guard.rule
        if rule.scope in ("public", "authenticated"):
            continue
        before = _snapshot(rt)
        if rule.scope not in DATA_SCOPES or (rule.scope != "data" and rule.write):
            resp = _send(client, app, world, build(route, method, own), "alpha_service")
            assert resp.status_code == 403, f"{route.path} {method} -> {resp.status_code}"
        else:
            resp = _send(client, app, world, build(route, method, other), "alpha_service")
            assert resp.status_code == 404, f"{route.path} {method} -> {resp.status_code}"
        assert _snapshot(rt) == before


def test_operator_reaches_every_object_read_route(app: Any, client: Any, world: World) -> None:
    for route, method in _probes(app):
        if method != "GET":
            continue
        probe = build(route, method, world.beta.refs())
        if probe.guard.rule.scope in ("public", "data"):
            continue
        resp = _send(client, app, world, probe, "operator")
        expected = 303 if probe.path == "/" else 200  # the home page redirects to /environments
        assert resp.status_code == expected, f"{probe.label} -> {resp.status_code} {resp.text[:300]}"


def test_tenant_admin_reaches_its_own_objects_on_every_read_route(
    app: Any, client: Any, world: World
) -> None:
    """The positive control of the isolation test: refusals above are about the other tenant."""
    for route, method in _probes(app):
        if method != "GET":
            continue
        probe = build(route, method, world.alpha.refs())
        if probe.guard.rule.scope in ("public", "data", "operator"):
            continue
        resp = _send(client, app, world, probe, "alpha_admin")
        expected = 303 if probe.path == "/" else 200
        assert resp.status_code == expected, f"{probe.label} -> {resp.status_code} {resp.text[:300]}"
