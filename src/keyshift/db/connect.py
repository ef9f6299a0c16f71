"""Opening the state database from a URL with clear errors: a malformed URL or unknown database kind
is a usage error (exit 2, `invalid_database_url`); a database that cannot be reached is
DatabaseUnavailableError (exit 4, `database_unavailable`). Never an internal error.

`public_url` is the URL without its password: what a home records and what messages show.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError

from keyshift.db.engine import make_engine
from keyshift.errors import DatabaseUnavailableError, UsageError

SCHEMES = ("sqlite", "postgresql")


def public_url(url: str) -> str:
    """The URL with any password removed (safe to record in a home or print)."""
    try:
        # URL.set(password=None) keeps the password (it means "unchanged"); _replace drops it.
        return make_url(url)._replace(password=None).render_as_string(hide_password=False)
    except ArgumentError:
        return "<unparsable URL>"


def has_password(url: str) -> bool:
    try:
        return make_url(url).password is not None
    except ArgumentError:
        return False


def open_engine(url: str) -> Engine:
    """An engine for `url`, or UsageError for a URL that is not a usable SQLite/PostgreSQL URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(
            "invalid database URL: expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
            code="invalid_database_url",
        ) from None
    if parsed.get_backend_name() not in SCHEMES:
        raise UsageError(
            f"unsupported database {parsed.get_backend_name()!r} in {public_url(url)}: "
            "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
            code="invalid_database_url",
        )
    try:
        return make_engine(url)
    except (NoSuchModuleError, ModuleNotFoundError, ArgumentError) as exc:
        raise UsageError(
            f"cannot use database URL {public_url(url)}: {type(exc).__name__}", code="invalid_database_url"
        ) from None


@contextmanager
def reachable(url: str) -> Iterator[None]:
    """Turn a failure to connect into DatabaseUnavailableError (message without the password)."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        pw = make_url(url).password if has_password(url) else None
        if pw:
            detail = detail.replace(str(pw), "***")
        raise DatabaseUnavailableError(f"database unreachable at {public_url(url)}: {detail[:300]}") from None
