"""Vault call metrics, added in one place: where the registry hands out an adapter.

`instrument(vault)` replaces the adapter's data-plane methods on the instance with timed versions
(its class is unchanged, so `isinstance` checks still hold). A call an adapter makes to itself
inside an outer call (e.g. `wrap` reading `describe`) is part of the outer call and not counted
twice.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from keyshift.errors import KeyInaccessibleError, NotFoundError, VaultUnavailableError
from keyshift.observability import metrics

OPERATIONS = ("info", "describe", "wrap", "unwrap", "check_access")
OUTCOMES = frozenset(metrics.VAULT_OUTCOMES)

V = TypeVar("V")

_depth = threading.local()


def outcome_of(exc: BaseException) -> str:
    """Outcome class of a failed vault call: refused, unreachable or local.

    Typed vault errors may carry an `outcome` attribute; without one the class decides:
    unavailable/throttled -> unreachable; key not found, disabled, expired, deleted, access denied
    -> refused (the vault answered no); anything else (bad input, a wrapped key that does not
    unwrap, a bug) -> local.
    """
    declared = getattr(exc, "outcome", None)
    if isinstance(declared, str) and declared in OUTCOMES and declared != "ok":
        return declared
    if isinstance(exc, VaultUnavailableError):
        return "unreachable"
    if isinstance(exc, KeyInaccessibleError | NotFoundError):
        return "refused"
    return "local"


def _timed(kind: str, operation: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_depth, "n", 0)
        if depth:
            return fn(*args, **kwargs)
        _depth.n = 1
        started = time.perf_counter()
        outcome = "ok"
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            _depth.n = 0
            elapsed = time.perf_counter() - started
            metrics.vault_calls.labels(kind, operation, outcome).inc()
            metrics.vault_seconds.labels(kind, operation, outcome).observe(elapsed)

    call.__keyshift_instrumented__ = True  # type: ignore[attr-defined]
    return call


def instrument(vault: V) -> V:
    """Time and count the vault's data-plane calls (idempotent)."""
    kind = str(getattr(vault, "kind", "unknown"))
    for operation in OPERATIONS:
        method = getattr(vault, operation, None)
        if method is None or getattr(method, "__keyshift_instrumented__", False):
            continue
        try:
            setattr(vault, operation, _timed(kind, operation, method))
        except (AttributeError, TypeError):  # pragma: no cover - an adapter with __slots__
            return vault
    return vault
