"""Operations endpoints at the root: `/healthz`, `/readyz` (unauthenticated) and `/metrics`.

`/metrics` names policy ids and counts across every tenant, so it is the operator's: a Prometheus
scrape job carries an operator token as its bearer token. Any other token is refused (403).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from keyshift.api.access import Ctx, allow
from keyshift.api.models.meta import Alive
from keyshift.api.readiness import ReadinessProbe
from keyshift.observability import exposition

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Alive)
def healthz(ctx: Ctx = allow("public")) -> dict[str, Any]:
    """The process is alive (no dependency is checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "not ready: `failed` names the checks that failed"}},
)
async def readyz(request: Request, ctx: Ctx = allow("public")) -> JSONResponse:
    """Ready to serve: state database reachable, schema at head, needed vaults openable."""
    probe: ReadinessProbe = request.app.state.readiness
    result = await run_in_threadpool(probe)
    return JSONResponse(result.to_dict(), status_code=200 if result.ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, ctx: Ctx = allow("operator")) -> Response:
    """Prometheus text exposition of this process and of the state database (operator token)."""
    body = await run_in_threadpool(exposition.render, request.app.state.metrics_state)
    return Response(content=body, media_type=exposition.CONTENT_TYPE)
