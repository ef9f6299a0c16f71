"""The one clock. Every rule that counts days reads it.

`SystemClock` is the real time. `FakeableClock` honours `KEYSHIFT_NOW` (ISO 8601) but only when
the state home was created with `keyshift init --allow-fake-clock`; any other home ignores it.
Tests may also pass a `FixedClock` directly to services.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Protocol

from keyshift.errors import UsageError

NOW_ENV = "KEYSHIFT_NOW"


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...


def utc(dt: datetime) -> datetime:
    """Normalise a datetime to aware UTC (naive values are taken as UTC, as SQLite returns them)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not an ISO 8601 time: {text!r}") from None
    return utc(value)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until moved. For tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = utc(start) if start else datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = utc(when)

    def advance(self, **delta: float) -> datetime:
        self._now = self._now + timedelta(**delta)
        return self._now


class FakeableClock:
    """Reads KEYSHIFT_NOW on every call when allowed, else the system time."""

    def __init__(self, allow_fake: bool) -> None:
        self.allow_fake = allow_fake

    def now(self) -> datetime:
        if self.allow_fake:
            text = os.environ.get(NOW_ENV)
            if text:
                return parse_time(text)
        return datetime.now(UTC)
