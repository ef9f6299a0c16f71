"""The OpenAPI document: stable operation ids, the bearer security scheme, the response headers the
server sends, and the constraints that depend on the deployment (its region list).

Operation ids are `<resource>_<verb>` (`environments_list`, `jobs_cancel`), looked up by method and
path so that a route's function can be renamed without changing the contract; a route that declares
its own `operation_id` keeps it, and a route missing from the table gets `<tag>_<function name>`.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from keyshift.api.access import guards_of
from keyshift.api.schemas import TABLE_PATTERN, TEXT_PATTERN
from keyshift.runtime import Runtime

API_PREFIX = "/api/v1"
BEARER = "bearerAuth"

_E = "/environments/{env}"
_K = "/vaults/{vault}/keys/{key}"
_P = "/policies/{policy}"
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "healthz",
    ("GET", "/readyz"): "readyz",
    ("GET", "/metrics"): "metrics",
    ("GET", "/whoami"): "whoami",
    ("GET", "/tenants"): "tenants_list",
    ("POST", "/tenants"): "tenants_create",
    ("GET", "/tenants/{tenant}"): "tenants_get",
    ("POST", "/tenants/{tenant}/byok-flag/remove"): "tenants_byok_flag_remove",
    ("POST", "/tenants/{tenant}/byok-flag/add"): "tenants_byok_flag_add",
    ("GET", "/environments"): "environments_list",
    ("POST", "/environments"): "environments_create",
    ("GET", _E): "environments_get",
    ("DELETE", _E): "environments_delete",
    ("PUT", f"{_E}/managed"): "environments_set_managed",
    ("POST", f"{_E}/features"): "environments_enable_feature",
    ("POST", f"{_E}/re-enable"): "environments_reenable",
    ("POST", f"{_E}/restore"): "environments_restore",
    ("GET", f"{_E}/coverage"): "environments_coverage",
    ("GET", "/vaults"): "vaults_list",
    ("POST", "/vaults"): "vaults_create",
    ("GET", "/vaults/{vault}"): "vaults_get",
    ("GET", "/vaults/{vault}/keys"): "keys_list",
    ("POST", "/vaults/{vault}/keys"): "keys_create",
    ("GET", _K): "keys_get",
    ("PATCH", _K): "keys_update_expiry",
    ("DELETE", _K): "keys_delete",
    ("POST", f"{_K}/rotate"): "keys_rotate",
    ("POST", f"{_K}/disable"): "keys_disable",
    ("POST", f"{_K}/enable"): "keys_enable",
    ("POST", f"{_K}/recover"): "keys_recover",
    ("POST", f"{_K}/purge"): "keys_purge",
    ("POST", f"{_K}/grants"): "keys_grant",
    ("DELETE", f"{_K}/grants/{{identity}}"): "keys_revoke_grant",
    ("GET", f"{_K}/coverage"): "keys_coverage",
    ("POST", f"{_K}/retire"): "keys_retire",
    ("GET", "/policies"): "policies_list",
    ("POST", "/policies"): "policies_create",
    ("GET", _P): "policies_get",
    ("PATCH", _P): "policies_update",
    ("DELETE", _P): "policies_delete",
    ("POST", f"{_P}/health"): "policies_check_health",
    ("POST", f"{_P}/environments"): "policies_add_environment",
    ("DELETE", f"{_P}/environments/{{env}}"): "policies_remove_environment",
    ("POST", f"{_P}/swap"): "policies_swap_environment",
    ("PUT", f"{_P}/rotation"): "policies_set_rotation",
    ("GET", "/jobs"): "jobs_list",
    ("GET", "/jobs/{job}"): "jobs_get",
    ("POST", "/jobs/{job}/resume"): "jobs_resume",
    ("POST", "/jobs/{job}/cancel"): "jobs_cancel",
    ("GET", "/audit-trail"): "audit_trail_list",
    ("GET", f"{_E}/records/{{table}}"): "records_list",
    ("GET", f"{_E}/records/{{table}}/{{record_id}}"): "records_get",
    ("PUT", f"{_E}/records/{{table}}/{{record_id}}"): "records_put",
    ("DELETE", f"{_E}/records/{{table}}/{{record_id}}"): "records_delete",
    ("POST", f"{_E}/audit"): "audit_events_append",
    ("GET", f"{_E}/audit"): "audit_events_list",
    ("GET", f"{_E}/files"): "files_list",
    ("PUT", f"{_E}/files/{{path}}"): "files_put",
    ("GET", f"{_E}/files/{{path}}"): "files_get",
    ("DELETE", f"{_E}/files/{{path}}"): "files_delete",
    ("PUT", f"{_E}/tables/{{table}}/search-fields"): "search_fields_set",
    ("GET", f"{_E}/tables/{{table}}/search"): "search_query",
    ("POST", f"{_E}/lake/exports"): "lake_exports_create",
    ("GET", f"{_E}/lake/exports"): "lake_exports_list",
    ("POST", f"{_E}/backups"): "backups_create",
    ("GET", f"{_E}/backups"): "backups_list",
    ("POST", f"{_E}/backups/{{backup}}/restore"): "backups_restore",
}

_CONVERTER = re.compile(r"\{(\w+):\w+\}")


def template(path: str) -> str:
    """A route path as the document spells it: without the API prefix and converters."""
    path = _CONVERTER.sub(r"{\1}", path)
    return path.removeprefix(API_PREFIX) or "/"


def operation_id(route: APIRoute) -> str:
    """The `generate_unique_id_function` of the app (used for routes without their own id)."""
    method = sorted(route.methods or {"GET"})[0]
    known = OPERATION_IDS.get((method, template(route.path_format)))
    if known is not None:
        return known
    tag = str(route.tags[0]) if route.tags else "api"
    return re.sub(r"[^a-z0-9]+", "_", f"{tag}_{route.name}".lower()).strip("_")


# -- the document --------------------------------------------------------------------------------
_ACCEPTED_HEADERS = {
    "Location": {
        "description": "The job's URL (`/api/v1/jobs/<id>`): poll it until its `state` is final.",
        "schema": {"type": "string"},
        "required": True,
    },
    "Retry-After": {
        "description": "Seconds to wait before polling the job.",
        "schema": {"type": "integer"},
        "required": True,
    },
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (sent when the vault or database is unavailable).",
        "schema": {"type": "integer"},
    }
}
_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "`Bearer`: the scheme to authenticate with.",
        "schema": {"type": "string"},
    }
}
_NEXT_AFTER = {
    "X-Next-After": {
        "description": "On a full page: the last record id; pass it as `after` for the next page.",
        "schema": {"type": "string"},
    }
}


def api_routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    """(full path, route) of every API route, whether or not this FastAPI keeps included routers."""
    import fastapi.routing

    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # an older FastAPI: included routes carry their full path themselves
        return [(r.path_format, r) for r in app.routes if isinstance(r, APIRoute)]
    return [
        (str(rc.path), rc.original_route)
        for rc in contexts(app.routes)
        if isinstance(rc.original_route, APIRoute) and isinstance(rc.path, str)
    ]


def _public_operations(app: FastAPI) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for path, route in api_routes(app):
        if any(g.rule.scope == "public" for g in guards_of(route)):
            out |= {(m.lower(), template(path)) for m in route.methods or ()}
    return out


_SEGMENT = r"(?!\.\.?(?:/|$))[^\x00-\x1f\x7f\\/]+"
# What the services check for path and query parameters of these names (stores.record_codec,
# stores.files); the guard itself refuses NUL in any of them.
PARAM_RULES: dict[str, dict[str, Any]] = {
    "table": {"pattern": TABLE_PATTERN},
    "record_id": {"pattern": r"^(?!\.\.?$)[A-Za-z0-9_.:@+=~-]{1,512}$"},
    "after": {"pattern": r"^[A-Za-z0-9_.:@+=~-]{1,512}$"},
    "prefix": {"pattern": rf"^(?![A-Za-z]:)(?:{_SEGMENT}(?:/{_SEGMENT})*)?/*$"},
    "path": {"pattern": rf"^(?![A-Za-z]:){_SEGMENT}(?:/{_SEGMENT})*$"},
}
# Query parameters the server refuses to go without (with its own error code, not a 422).
REQUIRED_QUERY = {("delete", "/environments/{env}"): {"confirm"}}


def _param(method: str, path: str, param: dict[str, Any]) -> None:
    schema = param.get("schema", {})
    rule = PARAM_RULES.get(param.get("name", ""))
    if rule is not None and param.get("in") in ("path", "query"):
        for option in [schema, *schema.get("anyOf", [])]:
            if option.get("type") == "string":
                option.update(rule)
    if param.get("name") in REQUIRED_QUERY.get((method, template(path)), ()):
        param["required"] = True
        param["schema"] = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": TEXT_PATTERN}
    _no_nul(param.get("schema", {}))


def _no_nul(schema: dict[str, Any]) -> None:
    """Path and query strings never hold NUL (the guard refuses it with 400 before anything else)."""
    for option in [schema, *schema.get("anyOf", [])]:
        if option.get("type") == "string" and "pattern" not in option and "format" not in option:
            option["pattern"] = r"^[^\x00]*$"


def _region_schema(rt: Runtime) -> dict[str, Any]:
    return {
        "type": "string",
        "enum": list(rt.settings.regions),
        "description": "One of the deployment's regions (`keyshift init --regions`).",
    }


def build(app: FastAPI, rt: Runtime) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (`keyshift token create`): `Authorization: Bearer tok_<id>.<secret>`.",
    }
    public = _public_operations(app)
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            is_public = (method, template(path)) in public
            op["security"] = [] if is_public else [{BEARER: []}]
            for param in op.get("parameters", []):
                _param(method, path, param)
            responses: dict[str, Any] = op.setdefault("responses", {})
            if is_public:
                responses.pop("401", None)
            elif "401" in responses:
                responses["401"].setdefault("headers", _AUTHENTICATE)
            if "503" in responses:
                responses["503"].setdefault("headers", _RETRY_AFTER)
            if "202" in responses:
                responses["202"].setdefault("headers", _ACCEPTED_HEADERS)
            if op.get("operationId") == "records_list" and "200" in responses:
                responses["200"].setdefault("headers", _NEXT_AFTER)
    schemas = components.get("schemas", {})
    for name in _request_models(doc):
        schema = schemas.get(name, {})
        region = schema.get("properties", {}).get("region")
        if region is not None:
            nullable = "anyOf" in region
            enum = _region_schema(rt)
            schema["properties"]["region"] = {"anyOf": [enum, {"type": "null"}]} if nullable else enum
    return doc


def _request_models(doc: dict[str, Any]) -> set[str]:
    """Names of the component schemas used as request bodies."""
    names: set[str] = set()
    for item in doc.get("paths", {}).values():
        for op in item.values():
            for media in op.get("requestBody", {}).get("content", {}).values():
                refs = [media.get("schema", {}), *media.get("schema", {}).get("anyOf", [])]
                names |= {r["$ref"].rsplit("/", 1)[-1] for r in refs if "$ref" in r}
    return names


def install(app: FastAPI, rt: Runtime) -> None:
    """Serve the document built above at `app.openapi_url` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, rt)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
