"""Data-plane call metrics at the service boundary (`stores.service.EnvironmentData`).

`instrument(store, name)` puts the store behind a proxy whose public operations are counted and
timed. The outcome label is the error's class of exit code, a fixed vocabulary: ok, usage,
not_found, conflict, denied, key_inaccessible, unavailable, integrity, internal. A store operation
calling another one of the same store counts once (the outer one): its calls to itself do not pass
through the proxy.
Generator-returning operations are timed until they return the generator, not until it is drained.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from keyshift.observability import metrics

OPERATIONS: dict[str, tuple[str, ...]] = {
    "records": ("put", "put_many", "delete", "get", "get_record", "get_many", "scan", "iter_all", "tables"),
    "audit": ("append", "query"),
    "files": ("put", "open", "get", "copy_to", "delete", "list"),
}
_BY_EXIT = {
    1: "internal",
    2: "usage",
    3: "not_found",
    4: "conflict",
    5: "denied",
    6: "key_inaccessible",
    7: "unavailable",
}

S = TypeVar("S")


def outcome_of(exc: BaseException) -> str:
    from keyshift.errors import IntegrityError

    if isinstance(exc, IntegrityError):
        return "integrity"
    code = getattr(exc, "exit_code", None)
    return _BY_EXIT.get(code, "internal") if isinstance(code, int) else "internal"


_children: dict[tuple[str, str], tuple[Any, Any]] = {}
_children_lock = threading.Lock()


def _series(store: str, operation: str) -> tuple[Any, Any]:
    """(ok counter, latency histogram) of one store operation, resolved once per process."""
    found = _children.get((store, operation))
    if found is None:
        with _children_lock:
            found = (
                metrics.data_requests.labels(store, operation, "ok"),
                metrics.data_seconds.labels(store, operation),
            )
            _children[(store, operation)] = found
    return found


def _timed(store: str, operation: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    ok, histogram = _series(store, operation)
    ok_inc, observe, clock = ok.inc, histogram.observe, time.perf_counter

    def call(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            metrics.data_requests.labels(store, operation, outcome_of(exc)).inc()
            raise
        finally:
            observe(clock() - started)
        ok_inc()
        return result

    return call


class Instrumented:
    """A store seen through the service boundary: its public operations are counted and timed.

    Everything else (attributes, helpers) passes through unchanged. Calls the store makes to itself
    do not go through the proxy, so they are not counted twice.
    """

    __slots__ = ("_ops", "_store", "_target", "_wrapped")

    def __init__(self, target: Any, store: str) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_store", store)
        object.__setattr__(self, "_ops", OPERATIONS.get(store, ()))
        # operation -> (the callable wrapped, its wrapper): built once, not per call (the data
        # plane's hot path goes through here); rebuilt if the target's attribute changed since
        object.__setattr__(self, "_wrapped", {})

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in self._ops or not callable(attr):
            return attr
        found = self._wrapped.get(name)
        if found is not None and found[0] == attr:
            return found[1]
        wrapper = _timed(self._store, name, attr)
        self._wrapped[name] = (attr, wrapper)
        return wrapper

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return repr(self._target)


def instrument(obj: S, store: str) -> S:
    """`obj` behind an `Instrumented` proxy, typed as `obj` for its callers."""
    return cast(S, Instrumented(obj, store))
