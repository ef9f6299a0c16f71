"""Admin-center sessions: the API token in an HttpOnly, SameSite=Strict cookie, and CSRF tokens.

The CSRF token of a session is HMAC-SHA256(app secret, token id); every form carries it and every
POST checks it in constant time. The login form uses a double-submit cookie instead (no session yet).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request
from starlette.responses import Response

from keyshift.errors import PermissionDeniedError

SESSION_COOKIE = "ks_session"
LOGIN_CSRF_COOKIE = "ks_login_csrf"
MAX_AGE = 8 * 3600


def cookie_token(request: Request) -> str | None:
    value = request.cookies.get(SESSION_COOKIE)
    return value or None


def app_secret(request: Request) -> bytes:
    secret: bytes = request.app.state.web_secret
    return secret


def csrf_for(request: Request, token_id: str) -> str:
    return hmac.new(app_secret(request), f"csrf:{token_id}".encode(), hashlib.sha256).hexdigest()


def check_csrf(request: Request, token_id: str, presented: str | None) -> None:
    expected = csrf_for(request, token_id)
    if not presented or not hmac.compare_digest(expected, presented[:128]):
        raise PermissionDeniedError(
            "the form has expired or did not come from this site; reload and retry", code="csrf_failed"
        )


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
