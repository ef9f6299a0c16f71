"""One-shot success messages after a form action: the action redirects (303) with the message in a
short-lived, HMAC-signed cookie; the next page shows it once and deletes the cookie.

The cookie is signed under the process's web secret, so a message shown as "success" was set by
this server; it is HTML-escaped when rendered like any other text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from keyshift.web.session import app_secret, set_cookie

FLASH_COOKIE = "ks_flash"
MAX_MESSAGE = 300
MAX_AGE = 60


def _sign(request: Request, payload: str) -> str:
    return hmac.new(app_secret(request), f"flash:{payload}".encode(), hashlib.sha256).hexdigest()


def flash_redirect(request: Request, url: str, message: str) -> RedirectResponse:
    """303 to `url`, showing `message` once on the page it lands on."""
    payload = base64.urlsafe_b64encode(message[:MAX_MESSAGE].encode()).decode().rstrip("=")
    response = RedirectResponse(url, status_code=303)
    set_cookie(response, request, FLASH_COOKIE, f"{payload}.{_sign(request, payload)}", MAX_AGE)
    return response


def take_flash(request: Request) -> str | None:
    """The message a previous action left, if its signature holds (None otherwise)."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or len(raw) > 1000:
        return None
    payload, _, mac = raw.rpartition(".")
    if not payload or not hmac.compare_digest(_sign(request, payload), mac):
        return None
    try:
        return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def clear_flash(request: Request, response: Response) -> None:
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/")
