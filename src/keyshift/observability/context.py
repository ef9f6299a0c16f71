"""The request id of the work in progress (a context variable: follows threads the API hands work to).

The API accepts a well-formed `X-Request-ID` from the caller or makes one, echoes it in the response,
writes it in the access log and in every admin audit entry recorded while the request runs.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar, Token

# Letters, digits and . _ : - only, 1..64 characters: never a way to inject text into logs.
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:\-]{1,64}")

_request_id: ContextVar[str | None] = ContextVar("keyshift_request_id", default=None)


def new_request_id() -> str:
    return secrets.token_hex(12)


def accept_request_id(offered: str | None) -> str:
    """The caller's id when well formed, else a fresh one."""
    if offered is not None and _WELL_FORMED.fullmatch(offered):
        return offered
    return new_request_id()


def current_request_id() -> str | None:
    return _request_id.get()


def bind_request_id(value: str | None) -> Token[str | None]:
    return _request_id.set(value)


def reset_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)
