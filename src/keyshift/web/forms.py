"""Form POSTs of the admin center: the page guard, then the CSRF check, before anything else.

`ctx: Ctx = web_form("env")` authorizes like `web_allow("env", write=True)` and then checks the
form's `csrf` field — before the other form fields are validated, so a form without its CSRF token
always gets the documented `403 csrf_failed`, whatever else is wrong with it. Routes still declare
`csrf` as a form field (`CSRF_FIELD`) so the form's schema names it.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Form, Request
from starlette.concurrency import run_in_threadpool

from keyshift.api.access import Ctx, Rule
from keyshift.web.pages import PageGuard
from keyshift.web.session import check_csrf


class FormGuard(PageGuard):
    """PageGuard plus the CSRF check of the submitted form."""

    async def __call__(self, request: Request) -> Ctx:  # type: ignore[override]
        ctx = await run_in_threadpool(PageGuard.__call__, self, request)
        form = await request.form()
        presented = form.get("csrf")
        assert ctx.principal is not None
        check_csrf(request, ctx.principal.token_id, presented if isinstance(presented, str) else None)
        return ctx


def web_form(scope: str) -> Any:
    return Depends(FormGuard(Rule(scope, True)))


def csrf_field() -> Any:
    return Form("", alias="csrf", max_length=128)
