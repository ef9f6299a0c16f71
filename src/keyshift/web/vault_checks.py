"""Admin center: whether this server reaches each vault now, without a slow vault holding a page.

The vaults of a page are checked at once, each in a thread of its own (`api.readiness.check_vault`:
a fresh adapter, credentials read again), and the page waits at most `WAIT_SECONDS` for all of
them together. A vault that has not answered by then is shown as "no answer yet" (code
`check_pending`) while its check goes on; an answer serves every page for `CACHE_SECONDS`. At most
one check per vault is in flight, so reloading a page while a vault hangs does not pile up
connections; each adapter's own connect and read timeouts end a hung check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from typing import Any

from keyshift.api.readiness import Check, check_vault
from keyshift.runtime import Runtime

WAIT_SECONDS = 2.0
CACHE_SECONDS = 10.0
PENDING: dict[str, Any] = {"ok": None, "code": "check_pending"}

Key = tuple[str, str, str]  # (home, database, vault name): one process may serve several homes


class VaultChecks:
    """Reachability of vaults for pages, checked in parallel, bounded in time, briefly cached."""

    def __init__(
        self,
        *,
        wait_seconds: float = WAIT_SECONDS,
        cache_seconds: float = CACHE_SECONDS,
        check: Callable[[Runtime, str], Check] = check_vault,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wait_seconds = wait_seconds
        self.cache_seconds = cache_seconds
        self._check = check
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[Key, tuple[float, dict[str, Any]]] = {}
        self._inflight: dict[Key, Future[dict[str, Any]]] = {}

    def reachability(self, rt: Runtime, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """`{"ok": bool, "code": str | None}` per vault name; `PENDING` for one not answered in time."""
        home, database = str(rt.home.path), rt.engine.url.render_as_string(hide_password=True)
        out: dict[str, dict[str, Any]] = {}
        waiting: dict[str, Future[dict[str, Any]]] = {}
        with self._lock:
            now = self._clock()
            for name in dict.fromkeys(names):
                key = (home, database, name)
                answer = self._answers.get(key)
                if answer is not None and now - answer[0] < self.cache_seconds:
                    out[name] = answer[1]
                    continue
                future = self._inflight.get(key)
                if future is None:
                    future = self._inflight[key] = Future()
                    threading.Thread(
                        target=self._run, args=(rt, key, future), name="keyshift-vault-check", daemon=True
                    ).start()
                waiting[name] = future
        if waiting:
            wait(waiting.values(), timeout=self.wait_seconds)
        for name, future in waiting.items():
            out[name] = future.result() if future.done() else PENDING
        return out

    def _run(self, rt: Runtime, key: Key, future: Future[dict[str, Any]]) -> None:
        try:
            check = self._check(rt, key[2])
            answer: dict[str, Any] = {"ok": check.ok, "code": check.code}
        except Exception:  # check_vault reports failures as codes; anything else is a failed check
            answer = {"ok": False, "code": "check_failed"}
        with self._lock:
            self._answers[key] = (self._clock(), answer)
            self._inflight.pop(key, None)
        future.set_result(answer)


vault_checks = VaultChecks()
