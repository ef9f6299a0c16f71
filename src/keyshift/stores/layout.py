"""Which backend holds each kind of data for an environment, and the transition layout.

`env.stores` names the backend per kind: {"records": "sql", "audit": "sql" | "document",
"files": "sql" | "file_storage"}. A missing entry falls back to the default for the environment:
everything in SQL while it is SQL-restricted (legacy BYOK tenant, not on a customer-managed key),
else the document store and file storage.

Transition (used while a migration moves audit events or files out of SQL): when `env.stores` has
"audit_from": "sql" (or "files_from": "sql"), writes go to the new backend and reads, queries and
lists see the union — the new backend first, then the legacy SQL store, without duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from keyshift.errors import ConflictError
from keyshift.stores.envstate import EnvView

KINDS = ("records", "audit", "files")
BACKENDS: dict[str, tuple[str, ...]] = {
    "records": ("sql",),
    "audit": ("sql", "document"),
    "files": ("sql", "file_storage"),
}
DEFAULTS = {"records": "sql", "audit": "document", "files": "file_storage"}

T = TypeVar("T")


@dataclass(frozen=True)
class StoreChoice:
    """Where one kind of data lives: `backend` takes writes; `legacy` (if any) is still read."""

    kind: str
    backend: str
    legacy: str | None = None


def sql_only(env: EnvView) -> bool:
    return env.sql_restriction and env.enc_mode != "cmk"


def choose(env: EnvView, kind: str) -> StoreChoice:
    if kind not in BACKENDS:
        raise ValueError(f"unknown store kind {kind!r}")
    backend = env.stores.get(kind) or ("sql" if sql_only(env) else DEFAULTS[kind])
    if backend not in BACKENDS[kind]:
        raise ConflictError(
            f"environment {env.name!r} names an unknown {kind} store {backend!r}", code="invalid_layout"
        )
    legacy = env.stores.get(f"{kind}_from")
    if legacy is not None and legacy not in BACKENDS[kind]:
        raise ConflictError(
            f"environment {env.name!r} names an unknown {kind} source store {legacy!r}", code="invalid_layout"
        )
    return StoreChoice(kind, backend, legacy if legacy != backend else None)


def layout(env: EnvView) -> dict[str, str]:
    """The effective backend per kind (what `env show` reports as `stores`)."""
    return {kind: choose(env, kind).backend for kind in KINDS}


def union(new: Iterable[T], legacy: Iterable[T], key: Callable[[T], Hashable]) -> list[T]:
    """Items of the new store first, then those of the legacy store not already seen (by key)."""
    out: list[T] = []
    seen: set[Hashable] = set()
    for item in new:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    for item in legacy:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out
