"""Structured logs: readable text by default, JSON lines with `--log-format json`.

Every record is one line with time, level, logger and message, plus the structured fields passed
as `extra=` (request id, principal, route, status, latency; job, environment, phase; policy,
evidence ...). Callers log ids, codes and counts, never values, keys or tokens; as a safety net
the formatter masks anything shaped like an API token secret.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_TOKEN = re.compile(r"\b(tok_[0-9a-f]{20})\.[A-Za-z0-9_\-]{16,}")
_HANDLER_NAME = "keyshift-structured"


def _scrub(text: str) -> str:
    return _TOKEN.sub(r"\1.<redacted>", text)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _time(record: logging.LogRecord) -> str:
    return (
        datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            out.setdefault(key, _plain(value))
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc"] = self.formatException(record.exc_info)
        return _scrub(json.dumps(out, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_time(record), f"{record.levelname:<7}", record.name, record.getMessage()]
        extras = " ".join(f"{k}={_text_value(v)}" for k, v in fields_of(record).items())
        line = " ".join(parts) + (f"  {extras}" if extras else "")
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        return _scrub(line)


def _text_value(value: Any) -> str:
    text = json.dumps(_plain(value), ensure_ascii=False, default=str)
    if isinstance(value, str) and re.fullmatch(r"[\w.:/@\-{}]+", value):
        return value
    return text


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a line is logged, not the stream it was at set-up
    (an embedding application or a test harness may swap and close stderr afterwards)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr


def configure(fmt: str = "text", *, level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send every `keyshift.*` logger (and uvicorn's error log) to one handler in the chosen format.

    Idempotent: a second call replaces the handler it installed before.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for name in ("keyshift", "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False
    return handler


def reset() -> None:
    """Undo `configure` (tests; embedding applications that configure logging themselves)."""
    for name in ("keyshift", "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
