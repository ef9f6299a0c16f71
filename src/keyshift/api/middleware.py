"""Pure ASGI middleware: request context (request id, access log, HTTP metrics), request body size
limits and the per-request admin audit record."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from keyshift.api.errors import PayloadTooLargeError
from keyshift.control import audit_trail
from keyshift.observability import metrics
from keyshift.observability.context import accept_request_id, bind_request_id, reset_request_id
from keyshift.runtime import Runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("keyshift.api")
access_log = logging.getLogger("keyshift.access")

REQUEST_ID_HEADER = b"x-request-id"


class RequestContext:
    """Outermost middleware: a request id for every request, one access log line, HTTP metrics.

    The id is the caller's `X-Request-ID` when well formed (else a fresh one); it is bound for the
    request's duration (the admin audit entries recorded meanwhile carry it) and echoed in the
    response. The access line names the request id, principal id, method, route template, status
    and latency — never the concrete path (it may hold names), a query, a body or a header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = None
        for name, value in scope.get("headers", []):
            if name == REQUEST_ID_HEADER:
                offered = value.decode("latin-1")
                break
        request_id = accept_request_id(offered)
        token = bind_request_id(request_id)
        started = time.perf_counter()
        status = 500

        async def stamped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        finally:
            reset_request_id(token)
            _access(scope, request_id, status, time.perf_counter() - started)


def _templates(app: Any) -> dict[int, str]:
    """Full templates of an app's routes. FastAPI versions that keep an included route's object
    unprefixed (and hand that object to the request scope) list the prefixed path separately."""
    state = getattr(app, "state", None)
    found: dict[int, str] | None = getattr(state, "route_templates", None)
    if found is None:
        found = {}
        import fastapi.routing

        contexts = getattr(fastapi.routing, "iter_route_contexts", None)
        if contexts is not None:  # else an older FastAPI: routes carry their full path themselves
            for rc in contexts(getattr(app, "routes", [])):
                if isinstance(rc.path, str):
                    found[id(rc.original_route)] = rc.path
        if state is not None:
            state.route_templates = found
    return found


def route_template(scope: Scope) -> str:
    """The matched route's template (`/api/v1/environments/{env}`), or `unmatched`."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    full = _templates(scope.get("app")).get(id(route))
    path = full or getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


def _access(scope: Scope, request_id: str, status: int, elapsed: float) -> None:
    method = str(scope.get("method", ""))
    route = route_template(scope)
    state = scope.get("state") or {}
    try:
        metrics.http_requests.labels(method, route, str(status)).inc()
        metrics.http_seconds.labels(method, route).observe(elapsed)
        access_log.info(
            "%s %s %d",
            method,
            route,
            status,
            extra={
                "request_id": request_id,
                "principal": str(state.get("principal", "anonymous")),
                "method": method,
                "route": route,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
            },
        )
    except Exception as exc:  # pragma: no cover - observability never fails a request
        log.error("access log failed: %s", type(exc).__name__)


class BodyLimit:
    """Refuse bodies over the limit: at once from Content-Length, else while streaming.

    Uploads to file routes (PUT .../files/...) get `file_limit`; everything else `json_limit`.
    """

    def __init__(self, app: ASGIApp, *, json_limit: int, file_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.file_limit = file_limit

    def _limit(self, scope: Scope) -> int:
        path: str = scope.get("path", "")
        if scope.get("method") == "PUT" and "/files/" in path:
            return self.file_limit
        return self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await _too_large(send, limit)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLargeError(f"request body larger than {limit} bytes")
            return message

        await self.app(scope, limited, send)


async def _too_large(send: Send, limit: int) -> None:
    err = PayloadTooLargeError(f"request body larger than {limit} bytes")
    body = json.dumps(err.to_dict()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestAudit:
    """One admin audit row per request: principal, method and path, status, outcome."""

    def __init__(self, app: ASGIApp, *, runtime: Runtime, skip_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.runtime = runtime
        self.skip_prefixes = skip_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(self.skip_prefixes):
            await self.app(scope, receive, send)
            return
        status = 500

        async def watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watching)
        finally:
            state = scope.get("state") or {}
            await run_in_threadpool(
                self._record,
                str(state.get("principal", "anonymous")),
                state.get("tenant_id"),
                str(scope.get("method", "")),
                path,
                status,
            )

    def _record(self, principal: str, tenant_id: str | None, method: str, path: str, status: int) -> None:
        rt = self.runtime.with_principal(principal)
        try:
            with rt.transaction() as session:
                audit_trail.record(
                    rt,
                    session,
                    "api.request",
                    target_type="http",
                    target_id=f"{method} {path}"[:200],
                    tenant_id=tenant_id,
                    outcome="ok" if status < 400 else "error",
                    reason=None if status < 400 else f"http {status}",
                    details={"status": status},
                )
        except Exception as exc:  # the response is already out; never turn it into a failure
            log.error("could not record request audit: %s", type(exc).__name__)
