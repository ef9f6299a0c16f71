"""FaultyVault: a FAKE for tests — wraps any real KeyVault and injects faults, deterministically.

It is not a provider and is never registered; tests put it around a real adapter (local, pkcs11,
kmip, aws-kms) to show how callers behave when the vault misbehaves:

- latency (fixed + seeded jitter) before each call;
- timeouts: the call sleeps `timeout_seconds` and raises VaultUnavailableError — either *before*
  the inner call (request lost) or *after* it (the vault did the work but the answer was lost:
  ``lost_reply_rate``); in both cases nothing is returned, so a caller can never hold a wrapped key
  the vault did not confirm;
- errors and throttling at seeded rates (VaultUnavailableError / ThrottledError, both retryable)
  or any typed error forced on chosen calls (`fail_calls`);
- outages: "down then back up" windows by call number (`outages=[(start, count), ...]`), or
  switched by hand (`go_down()` / `come_back()`).

Every decision comes from `random.Random(seed)` and the call counter, so a run is reproducible.
`calls` counts calls per operation (including failed ones) — also how benchmarks count vault calls.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from keyshift.errors import KeyshiftError, VaultUnavailableError
from keyshift.vaults.base import (
    KeyInfo,
    KeyRef,
    KeyVault,
    Permission,
    ThrottledError,
    VaultInfo,
    WrappedKey,
)

T = TypeVar("T")

FAULTABLE = ("info", "describe", "wrap", "unwrap", "check_access")


class FaultyVault:
    """A fake KeyVault wrapper that injects latency, timeouts, errors, throttling and outages."""

    def __init__(
        self,
        inner: KeyVault,
        *,
        seed: int = 0,
        latency: float = 0.0,
        jitter: float = 0.0,
        error_rate: float = 0.0,
        throttle_rate: float = 0.0,
        timeout_rate: float = 0.0,
        lost_reply_rate: float = 0.0,
        timeout_seconds: float = 0.0,
        outages: Iterable[tuple[int, int]] = (),
        fail_calls: Mapping[int, KeyshiftError] | None = None,
        operations: Iterable[str] = FAULTABLE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for rate in (error_rate, throttle_rate, timeout_rate, lost_reply_rate):
            if not 0.0 <= rate <= 1.0:
                raise ValueError("fault rates are probabilities in [0, 1]")
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind
        self.latency = latency
        self.jitter = jitter
        self.error_rate = error_rate
        self.throttle_rate = throttle_rate
        self.timeout_rate = timeout_rate
        self.lost_reply_rate = lost_reply_rate
        self.timeout_seconds = timeout_seconds
        self.outages = [(int(s), int(n)) for s, n in outages]
        self.fail_calls = dict(fail_calls or {})
        self.operations = frozenset(operations)
        self.sleep = sleep
        self._rng = random.Random(seed)
        self._down = False
        self.call_number = 0  # faultable calls seen so far (1-based numbering of the next is +1)
        self.calls: Counter[str] = Counter()
        self.inner_calls: Counter[str] = Counter()  # calls that reached the inner vault
        self.injected: Counter[str] = Counter()  # faults injected, by kind

    # -- switches ---------------------------------------------------------------------------------
    def go_down(self) -> None:
        self._down = True

    def come_back(self) -> None:
        self._down = False

    @property
    def down(self) -> bool:
        nxt = self.call_number + 1
        return self._down or any(s <= nxt < s + n for s, n in self.outages)

    # -- the fault engine -------------------------------------------------------------------------
    def _call(self, op: str, fn: Callable[[], T]) -> T:
        self.calls[op] += 1
        if op not in self.operations:
            self.inner_calls[op] += 1
            return fn()
        self.call_number += 1
        n = self.call_number
        # Draw every random number on every call so the sequence does not depend on outcomes.
        r_err, r_thr, r_to, r_lost, r_jit = (self._rng.random() for _ in range(5))
        delay = self.latency + self.jitter * r_jit
        if delay > 0:
            self.sleep(delay)
        forced = self.fail_calls.get(n)
        if forced is not None:
            self.injected["forced"] += 1
            raise forced
        if self._down or any(s <= n < s + c for s, c in self.outages):
            self.injected["outage"] += 1
            raise VaultUnavailableError(f"vault {self.name} is unreachable (injected outage)")
        if r_to < self.timeout_rate:
            self.injected["timeout"] += 1
            self.sleep(self.timeout_seconds)
            raise VaultUnavailableError(f"vault {self.name} timed out (injected)")
        if r_thr < self.throttle_rate:
            self.injected["throttle"] += 1
            raise ThrottledError(f"vault {self.name} throttled the request (injected)")
        if r_err < self.error_rate:
            self.injected["error"] += 1
            raise VaultUnavailableError(f"vault {self.name} answered with a server error (injected)")
        self.inner_calls[op] += 1
        result = fn()
        if r_lost < self.lost_reply_rate:
            # The vault did the work, the reply never arrived: the caller must not get the result.
            self.injected["lost_reply"] += 1
            self.sleep(self.timeout_seconds)
            raise VaultUnavailableError(f"vault {self.name} timed out waiting for the reply (injected)")
        return result

    def fresh(self) -> FaultyVault:
        """A "fresh connection" to the faked vault: this same fake (its faults, outages and
        counters apply to every connection; the embedded inner vault has no session to renew)."""
        return self

    # -- KeyVault ---------------------------------------------------------------------------------
    def info(self) -> VaultInfo:
        return self._call("info", self.inner.info)

    def describe(self, key: KeyRef) -> KeyInfo:
        return self._call("describe", lambda: self.inner.describe(key))

    def wrap(
        self, key: KeyRef, dek: bytes, *, identity: str, context: Mapping[str, str] | None = None
    ) -> WrappedKey:
        return self._call("wrap", lambda: self.inner.wrap(key, dek, identity=identity, context=context))

    def unwrap(
        self, wrapped: WrappedKey, *, identity: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        return self._call("unwrap", lambda: self.inner.unwrap(wrapped, identity=identity, context=context))

    def check_access(self, key: KeyRef, identity: str) -> frozenset[Permission]:
        return self._call("check_access", lambda: self.inner.check_access(key, identity))

    def __getattr__(self, name: str) -> Any:
        # KeyManager methods and anything else pass straight through (not faulted, but counted).
        attr = getattr(self.inner, name)
        if callable(attr):

            def passthrough(*args: Any, **kwargs: Any) -> Any:
                self.calls[name] += 1
                self.inner_calls[name] += 1
                return attr(*args, **kwargs)

            return passthrough
        return attr
