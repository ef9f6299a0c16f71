"""The one place that maps errors to HTTP: KeyshiftError -> its http_status with
{"error": {"code", "message"}}; request validation, unknown routes and anything unexpected get the
same body shape. Internal errors never carry details (no paths, no values, no tracebacks)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from keyshift.errors import AuthenticationError, KeyshiftError, UsageError

log = logging.getLogger("keyshift.api")

_MAX_MESSAGE = 600


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


def _keyshift(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeyshiftError)
    status = exc.http_status
    if status >= 500 and exc.code in ("internal_error",):
        body = error_body("internal_error", "internal error")
    else:
        body = exc.to_dict()
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
    if exc.retryable:
        headers = {**(headers or {}), "Retry-After": "5"}
    return _respond(request, exc, status, body, headers)


def _describe(errors: list[Any]) -> tuple[str, str]:
    parts: list[str] = []
    code = "invalid_request"
    for e in errors[:10]:
        kind = str(e.get("type", ""))
        if kind == "json_invalid":
            code = "malformed_json"
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        # Never echo the input back (it may be large or sensitive): location and reason only.
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return code, "; ".join(parts) or "invalid request"


def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    code, message = _describe(list(exc.errors()))
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
    return _respond(request, None, exc.status_code, error_body(code, message), exc.headers)


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
