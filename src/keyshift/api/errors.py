"""The one place that maps errors to HTTP: KeyshiftError -> its http_status with
{"error": {"code", "message"}}; request validation, unknown routes and anything unexpected get the
same body shape. Internal errors never carry details (no paths, no values, no tracebacks)."""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route, compile_path

from keyshift.errors import AuthenticationError, KeyshiftError, PermissionDeniedError, UsageError

log = logging.getLogger("keyshift.api")

_MAX_MESSAGE = 600
# The admin center's answer to a form whose CSRF token is missing or wrong (web.session.check_csrf).
CSRF_MESSAGE = "the form has expired or did not come from this site; reload and retry"


class PayloadTooLargeError(UsageError):
    """The request body is larger than the route allows."""

    code = "payload_too_large"
    http_status: ClassVar[int] = 413


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message[:_MAX_MESSAGE]}}


def _wants_html(request: Request) -> bool:
    """Admin-center pages get HTML errors (and a redirect to sign in); the API and JSON get JSON."""
    path = request.url.path
    if path.startswith(("/api/", "/openapi", "/static/")) or path in ("/metrics", "/healthz", "/readyz"):
        return False
    if path.endswith("/progress"):
        return False
    return getattr(request.app.state, "html_error", None) is not None


def _respond(
    request: Request, exc: KeyshiftError | None, status: int, body: dict[str, Any], headers: Any = None
) -> Response:
    if _wants_html(request):
        err = body["error"]
        return request.app.state.html_error(request, exc, status, err["code"], err["message"])  # type: ignore[no-any-return]
    return JSONResponse(body, status_code=status, headers=headers)


# Refusals that depend on the server's state, not on the request's shape: over HTTP they are
# conflicts (409) — a name two tenants use, a confirmation that is not the object's current name.
_STATE_CODES = {"ambiguous_name": 409, "confirmation_mismatch": 409}


def _keyshift(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeyshiftError)
    status = _STATE_CODES.get(exc.code, exc.http_status)
    if status >= 500 and exc.code in ("internal_error",):
        body = error_body("internal_error", "internal error")
    else:
        body = exc.to_dict()
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
    if exc.retryable:
        headers = {**(headers or {}), "Retry-After": "5"}
    return _respond(request, exc, status, body, headers)


# Pydantic messages that quote the input (or part of it) get a fixed wording instead.
_QUOTING_TYPES = {
    "extra_forbidden": "unknown field (not permitted)",
    "union_tag_invalid": "does not match any of the expected kinds",
    "union_tag_not_found": "the field that tells the kind is missing",
    "uuid_parsing": "should be a valid UUID",
    "url_parsing": "should be a valid URL",
}
_MAX_LOC_PART = 64
_LOC_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-\[\]]")


_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _loc_part(part: Any) -> str:
    """A location element as text: the caller's own key names are cut short and made printable."""
    text = str(part)
    if isinstance(part, int):
        return f"[{text}]"
    cleaned = _LOC_UNSAFE.sub("?", text[:_MAX_LOC_PART])
    return cleaned + ("..." if len(text) > _MAX_LOC_PART else "")


def _reason(e: Any) -> str:
    kind = str(e.get("type", ""))
    if kind in _QUOTING_TYPES:
        return _QUOTING_TYPES[kind]
    msg = str(e.get("msg", "invalid"))
    given = e.get("input")
    # A message that would carry the input back (any part of it) gets a neutral wording.
    if isinstance(given, str) and len(given) >= 3 and given in msg:
        return "invalid value"
    return msg


def _describe(errors: list[Any]) -> tuple[str, str]:
    parts: list[str] = []
    code = "invalid_request"
    for e in errors[:10]:
        kind = str(e.get("type", ""))
        if kind == "json_invalid":
            code = "malformed_json"
        where = list(e.get("loc", ()))
        if where and where[0] in _LOCATIONS:
            where = where[1:]
        if kind == "extra_forbidden" and where:  # the unknown key is the caller's input: not repeated
            where = where[:-1]
        loc = ".".join(_loc_part(x) for x in where).replace(".[", "[") or "body"
        # Never echo the input back (it may be large or sensitive): location and reason only.
        parts.append(f"{loc}: {_reason(e)}")
    return code, "; ".join(parts) or "invalid request"


CSRF_FIELD = "csrf"


def _csrf_missing(request: Request, errors: list[Any]) -> bool:
    """An admin-center form without a (well-formed) CSRF field: the documented 403 csrf_failed."""
    if request.url.path.startswith("/api/"):
        return False
    return any(tuple(e.get("loc", ()))[:2] == ("body", CSRF_FIELD) for e in errors)


def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if _csrf_missing(request, errors):
        err = PermissionDeniedError(CSRF_MESSAGE, code="csrf_failed")
        return _respond(request, err, err.http_status, err.to_dict())
    code, message = _describe(errors)
    status = 400 if code == "malformed_json" else 422
    return _respond(request, None, status, error_body(code, message))


_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, KeyshiftError):  # raised while the body was being read
        return _keyshift(request, exc.__cause__)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404:
        message = "no such resource"
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return _respond(request, None, exc.status_code, error_body(code, message), headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at this path (a 405's `Allow` names them all, not
    only those of the first route that matched the path)."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(request.app.state, "method_table", None)
    if table is None:
        from keyshift.api.openapi import api_routes

        table = [(compile_path(path)[0], set(route.methods or ())) for path, route in api_routes(request.app)]
        table += [
            (r.path_regex, set(r.methods or ()))
            for r in request.app.routes
            if isinstance(r, Route) and not isinstance(r, APIRoute)
        ]
        request.app.state.method_table = table
    path = request.scope.get("path", "")
    methods = {m for regex, ms in table if regex.match(path) for m in ms}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    if isinstance(exc, ResponseValidationError):
        # The response does not match its documented model: name the fields, never their values.
        where = [(".".join(map(str, e.get("loc", ()))), e.get("type")) for e in exc.errors()]
        log.error("response fields not matching the model: %s", where[:20])
    return _respond(request, None, 500, error_body("internal_error", "internal error"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(KeyshiftError, _keyshift)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
