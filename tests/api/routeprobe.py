"""Build a concrete request for ANY route of the app from its declaration: path parameters and
body fields are filled from a table of object references, so a route added without a rule, or with
a parameter this table does not know, fails the authorization tests instead of being skipped."""

from __future__ import annotations

import hashlib
import hmac
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from fastapi import params
from pydantic import BaseModel

from keyshift.api.access import Guard, guards_of
from keyshift.web.session import SESSION_COOKIE, cookie_token

# Path/body names that name an object of some tenant.
OBJECT_PARAMS = {"tenant", "env", "environment", "source", "policy", "vault", "job", "backup"}
# Names scoped inside another object (a key lives in the vault named next to it): filled from the
# same side's references but not counted as a cross-tenant reference on their own.
SCOPED_PARAMS = {"key", "export"}
# Other path parameters and the value used for them.
PLAIN_PARAMS = {
    "identity": "probe-identity",
    "table": "probe_table",
    "record_id": "probe-1",
    "path": "dir/probe.txt",
    "token": "tok_00000000000000000000",
    "feature": "audit",
}
# Required query parameters and the value used for them (optional ones keep their defaults).
QUERY_PARAMS = {"q": "probe"}


@dataclass
class Probe:
    route: Any
    method: str
    guard: Guard
    path: str
    json: Any = None
    form: dict[str, str] | None = None
    content: bytes | None = None
    references: frozenset[str] = frozenset()  # which object names were filled from `refs`

    @property
    def cookie_auth(self) -> bool:
        return self.guard.token_source is cookie_token

    @property
    def label(self) -> str:
        return f"{self.method} {self.route.path}"


def _unwrap_optional(ann: Any) -> Any:
    if get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _value(name: str, ann: Any, refs: dict[str, str], used: set[str]) -> Any:
    ann = _unwrap_optional(ann)
    if get_origin(ann) is typing.Annotated:
        ann = get_args(ann)[0]
    if name in OBJECT_PARAMS:
        used.add(name)
        return refs[name]
    if name in SCOPED_PARAMS:
        return refs[name]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return _model(ann, refs, used)
    models = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
    if get_origin(ann) in (typing.Union, types.UnionType) and models:
        return _model(models[0], refs, used)  # a body of several kinds (key types): the first one
    if get_origin(ann) is typing.Annotated:
        ann = get_args(ann)[0]
    if get_origin(ann) is Literal:
        return get_args(ann)[0]
    if get_origin(ann) is list:
        (inner,) = get_args(ann) or (str,)
        if get_origin(inner) is Literal:
            return list(get_args(inner))
        return [_value(name, inner, refs, used)]
    if ann is bool:
        return False
    if ann is int:
        return 2048 if name == "size" else 30 if name.endswith("days") else 1
    if get_origin(ann) is dict or ann is dict:
        return {"probe": "value"}
    if ann is str:
        return {"region": "eu", "ticket": "TICKET-1", "feature": "audit"}.get(name, f"probe-{name}")
    return {"probe": 1}


def _model(model: type[BaseModel], refs: dict[str, str], used: set[str]) -> dict[str, Any]:
    return {n: _value(n, f.annotation, refs, used) for n, f in model.model_fields.items()}


def build(route: Any, method: str, refs: dict[str, str], guard_refs: dict[str, str] | None = None) -> Probe:
    """refs fill every object reference; guard_refs (if given) fill the guard's own path parameter."""
    guards = guards_of(route)
    assert len(guards) == 1, f"{route.path} must declare exactly one access rule, has {len(guards)}"
    guard = guards[0]
    used: set[str] = set()
    path = route.path_format
    for name in route.param_convertors:
        if guard_refs is not None and name == guard.rule.param:
            value = guard_refs[name]
        elif name in OBJECT_PARAMS:
            used.add(name)
            value = refs[name]
        elif name in SCOPED_PARAMS:
            value = (guard_refs or refs)[name]
        elif name in PLAIN_PARAMS:
            value = PLAIN_PARAMS[name]
        else:
            raise AssertionError(f"{route.path}: path parameter {name!r} unknown to the probe table")
        path = path.replace("{" + name + "}", value)
    query = []
    for qp in route.dependant.query_params:
        if qp.field_info.is_required():
            assert qp.alias in QUERY_PARAMS, (
                f"{route.path}: query parameter {qp.alias!r} unknown to the probe"
            )
            query.append(f"{qp.alias}={QUERY_PARAMS[qp.alias]}")
    if query:
        path += "?" + "&".join(query)
    probe = Probe(route=route, method=method, guard=guard, path=path)
    body = route.dependant.body_params
    if body and any(isinstance(b.field_info, params.Form) for b in body):
        probe.form = {}
        for b in body:
            value = _value(b.alias, b.field_info.annotation, refs, used)
            probe.form[b.alias] = str(value).lower() if isinstance(value, bool) else str(value)
    elif body:
        if len(body) == 1 and not getattr(body[0].field_info, "embed", False):
            probe.json = _value(body[0].name, body[0].field_info.annotation, refs, used)
        else:
            probe.json = {b.alias: _value(b.alias, b.field_info.annotation, refs, used) for b in body}
    elif method in ("PUT", "POST") and "/files/" in route.path_format:
        probe.content = b"probe file content"
    probe.references = frozenset(used)
    return probe


def send(client: Any, probe: Probe, token: str, web_secret: bytes, token_id: str) -> Any:
    headers: dict[str, str] = {}
    form = dict(probe.form) if probe.form is not None else None
    if probe.cookie_auth:
        headers["Cookie"] = f"{SESSION_COOKIE}={token}"
        if form is not None and "csrf" in form:
            form["csrf"] = hmac.new(web_secret, f"csrf:{token_id}".encode(), hashlib.sha256).hexdigest()
    else:
        headers["Authorization"] = f"Bearer {token}"
    client.cookies.clear()
    return client.request(
        probe.method,
        probe.path,
        headers=headers,
        json=probe.json,
        data=form,
        content=probe.content,
        follow_redirects=False,
    )
