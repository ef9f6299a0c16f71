"""The FastAPI application: REST API under /api/v1, the admin center under /, one error mapping.

`create_app(rt)` takes an open Runtime (the server's own, principal "api:server"); each request acts
through `rt.with_principal("token:<id>:<role>")` so every service-level audit record names the caller,
and the RequestAudit middleware adds one audit row per request.
"""

from __future__ import annotations

from fastapi import FastAPI

from keyshift.api import errors, openapi
from keyshift.api.middleware import BodyLimit, RequestAudit, RequestContext
from keyshift.api.responses import KeyshiftJSONResponse
from keyshift.api.routes import ROUTERS, ops
from keyshift.api.schemas import ERROR_RESPONSES
from keyshift.runtime import Runtime

API_PREFIX = "/api/v1"
JSON_LIMIT = 1 << 20  # 1 MiB for JSON bodies
FILE_LIMIT = 1 << 32  # 4 GiB for streamed file uploads


def create_app(
    rt: Runtime,
    *,
    json_limit: int = JSON_LIMIT,
    file_limit: int = FILE_LIMIT,
    with_web: bool = True,
    require_vaults: tuple[str, ...] = (),
) -> FastAPI:
    app = FastAPI(
        title="Keyshift",
        version="1",
        summary="Customer-managed encryption keys and online key-mode migration.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        default_response_class=KeyshiftJSONResponse,
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.runtime = rt
    errors.install(app)
    openapi.install(app, rt)
    _install_operations(app, rt, require_vaults)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    if with_web:
        from keyshift.web import pages

        pages.install(app)
    app.add_middleware(BodyLimit, json_limit=json_limit, file_limit=file_limit)
    app.add_middleware(RequestAudit, runtime=rt, skip_prefixes=("/static/", *OPS_PATHS))
    app.add_middleware(RequestContext)  # outermost: the request id covers everything below
    return app


OPS_PATHS = ("/healthz", "/readyz", "/metrics")


def _install_operations(app: FastAPI, rt: Runtime, require_vaults: tuple[str, ...]) -> None:
    """/healthz, /readyz, /metrics (not audited per request: probes and scrapes run every few seconds)."""
    from keyshift.api.readiness import ReadinessProbe
    from keyshift.api.state_metrics import state_registry

    app.state.readiness = ReadinessProbe(rt, vaults=require_vaults)
    app.state.metrics_state = state_registry(rt)
    app.include_router(ops.router, responses=ERROR_RESPONSES)
