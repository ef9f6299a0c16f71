"""Admin center: an environment's key coverage (which key versions its data depends on, with
counts), linked from the environment page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyshift.api.access import Ctx
from keyshift.control import coverage
from keyshift.web.pages import web_allow
from keyshift.web.render import page

router = APIRouter(include_in_schema=False)


@router.get("/environments/{env}/coverage")
def coverage_page(request: Request, env: str, ctx: Ctx = web_allow("env")) -> Response:
    return page(request, "coverage.html", view=coverage.env_coverage(ctx.rt, env))
