"""Templates and the HTML side of errors for the admin center."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from keyshift.clock import utc
from keyshift.errors import AuthenticationError, KeyshiftError
from keyshift.web.backlinks import back_link
from keyshift.web.flash import clear_flash, take_flash
from keyshift.web.session import SESSION_COOKIE, csrf_for

HERE = Path(__file__).parent
_env = Environment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return utc(value).strftime("%Y-%m-%d %H:%M UTC")


_env.filters["when"] = _when


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    ctx = getattr(request.state, "web_ctx", None)
    principal = ctx.principal if ctx is not None else None
    rt = request.app.state.runtime
    html = _env.get_template(template).render(
        request=request,
        principal=principal,
        csrf=csrf_for(request, principal.token_id) if principal is not None else "",
        platform_name=rt.settings.platform_name,
        flash=take_flash(request) if principal is not None else None,
        **context,
    )
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    clear_flash(request, response)
    return response


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def html_error(request: Request, exc: KeyshiftError | None, status: int, code: str, message: str) -> Response:
    if isinstance(exc, AuthenticationError):
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
    back = back_link(request.method, request.url.path, code)
    return page(request, "error.html", status_code=status, code=code, message=message, back=back)
