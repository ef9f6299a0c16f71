"""Liveness and readiness of an API process (`/healthz`, `/readyz`).

`/healthz` answers while the process runs. `/readyz` answers 200 only when this process can do its
work: the state database answers, its schema is at the head revision this Keyshift needs, and every
vault the process needs opens (the platform vault, plus any named with `serve --require-vault`):
a fresh adapter is built (so missing credentials show), `info()` answers, and for a local vault the
home's master key loads. Failures are named by check (`database`, `schema`, `vault:<name>`) with a
stable error code only — never a message, a URL or a secret.

Results are kept for `cache_seconds` so a load balancer polling every second costs one round of
checks per interval, not one per probe.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from keyshift.runtime import Runtime


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ok": self.ok}
        if self.code is not None:
            out["code"] = self.code
        return out


@dataclass
class Readiness:
    checks: list[Check] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ready" if self.ready else "not_ready",
            "failed": [c.name for c in self.checks if not c.ok],
            "checks": [c.to_dict() for c in self.checks],
        }


def _code(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


_CODE = re.compile(r"[a-z][a-z0-9_]{0,59}")


def _unreachable_code(detail: str) -> str:
    """External adapters report an unreachable vault as `"<error code>: <message>"` in `detail`."""
    head = detail.split(":", 1)[0].strip()
    return head if ":" in detail and _CODE.fullmatch(head) else "vault_unavailable"


def check_database(rt: Runtime) -> Check:
    try:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return Check("database", False, "database_unreachable")
    return Check("database", True)


def check_schema(rt: Runtime) -> Check:
    from keyshift.db import schema

    try:
        current, head = schema.current_revision(rt.engine), schema.head_revision()
    except Exception:
        return Check("schema", False, "schema_unreadable")
    if current != head:
        return Check("schema", False, "schema_out_of_date")
    return Check("schema", True)


def check_vault(rt: Runtime, name: str) -> Check:
    from keyshift.vaults.registry import open_vault

    label = f"vault:{name}"
    try:
        vault = open_vault(rt, name)  # fresh adapter: credentials are read again
        info = vault.info()
        if not info.reachable:
            return Check(label, False, _unreachable_code(info.detail))
        if vault.kind == "local":
            from keyshift.vaults.master_key import load_master_key

            load_master_key(rt.home.path)
    except Exception as exc:
        return Check(label, False, _code(exc))
    return Check(label, True)


class ReadinessProbe:
    """The checks of one process, cached for a few seconds."""

    def __init__(self, rt: Runtime, *, vaults: tuple[str, ...] = (), cache_seconds: float = 2.0) -> None:
        self.rt = rt
        names = [rt.settings.platform_vault, *vaults]
        self.vaults = tuple(dict.fromkeys(names))
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._last: tuple[float, Readiness] | None = None

    def run(self) -> Readiness:
        db = check_database(self.rt)
        if not db.ok:  # nothing else can answer without the database
            skipped = [Check("schema", False, "database_unreachable")]
            skipped += [Check(f"vault:{v}", False, "database_unreachable") for v in self.vaults]
            return Readiness([db, *skipped])
        return Readiness([db, check_schema(self.rt), *(check_vault(self.rt, v) for v in self.vaults)])

    def __call__(self) -> Readiness:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.cache_seconds:
                return self._last[1]
            result = self.run()
            self._last = (time.monotonic(), result)
            return result
