"""One timestamp format on every output: ISO 8601 in UTC with a `Z` (`2026-01-31T12:00:00.123456Z`).

`iso_z` formats a datetime. `normalize_times` rewrites a result about to be printed or returned by
the API: datetimes anywhere, and `+00:00` time strings under time-named keys (`at`, `*_at`,
`*_after`, `expires`, ...), become the `Z` form. It never descends into caller content (a record's
`value`, an audit `event`), whose strings are the caller's own.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_TIME_KEYS = {"at", "since", "until", "expires", "not_before", "deadline", "created", "updated"}
_TIME_SUFFIXES = ("_at", "_after", "_before", "_until", "_since", "_time")
_CALLER_CONTENT = {"value", "event", "values"}
_ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?\+00:00$")


def iso_z(value: datetime) -> str:
    """ISO 8601 in UTC ending in Z (a naive datetime is taken as UTC)."""
    dt = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return dt.isoformat().replace("+00:00", "Z")


def is_time_key(key: str) -> bool:
    return key in _TIME_KEYS or key.endswith(_TIME_SUFFIXES)


def normalize_times(value: Any, *, time_key: bool = False) -> Any:
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, dict):
        return {
            k: v
            if k in _CALLER_CONTENT
            else normalize_times(v, time_key=isinstance(k, str) and is_time_key(k))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [normalize_times(v, time_key=time_key) for v in value]
    if time_key and isinstance(value, str) and _ISO_UTC.match(value):
        return value[: -len("+00:00")] + "Z"
    return value
