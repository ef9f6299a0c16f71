"""A slow vault stalls only the DEK it is unwrapping: the key cache's lock is never held across I/O."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from keyshift.runtime import Runtime
from keyshift.stores import keys
from keyshift.stores.records import RecordStore
from stores.helpers import make_env


class _GatedVault:
    """Wraps a real vault; unwrap blocks until the test opens the gate (a test double, not a fake vault)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.unwraps = 0

    def unwrap(self, *a: Any, **kw: Any) -> Any:
        self.unwraps += 1
        self.entered.set()
        assert self.gate.wait(20), "test never opened the gate"
        return self.inner.unwrap(*a, **kw)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)


def _wait_entered(gated: dict[str, _GatedVault], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(g.entered.is_set() for g in list(gated.values())):
            return True
        time.sleep(0.02)
    return False


def test_flush_and_other_keys_proceed_while_one_unwrap_is_stuck_in_the_vault(
    sqlite_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = sqlite_rt
    slow_env, fast_env = make_env(rt, "slow"), make_env(rt, "fast")
    RecordStore(rt, slow_env).put("t", "a", {"v": 1})
    RecordStore(rt, fast_env).put("t", "b", {"v": 2})
    keys.flush(rt, slow_env)  # the slow env's next read must unwrap

    original = rt.vault
    gated: dict[str, _GatedVault] = {}

    def vault(name_or_id: str) -> Any:
        inner = original(name_or_id)
        return gated.setdefault(inner.name, _GatedVault(inner))

    monkeypatch.setattr(rt, "vault", vault)
    results: dict[str, Any] = {}

    def slow_reader() -> None:
        results["slow"] = RecordStore(rt, slow_env).get("t", "a")

    t = threading.Thread(target=slow_reader)
    t.start()
    try:
        # Wait until the reader is inside the vault call.
        assert _wait_entered(gated)
        # While it is stuck: a flush from this thread, inside a transaction, returns at once...
        done = threading.Event()

        def flush_in_tx() -> None:
            with rt.transaction():
                keys.flush(rt, fast_env)
            done.set()

        f = threading.Thread(target=flush_in_tx)
        f.start()
        assert done.wait(5), "flush blocked behind an unwrap in progress"
        f.join()
        # ...and a read of another environment (whose key was flushed, so it unwraps) is only
        # stalled by the same gated vault, not by a lock held for the slow one.
        g = next(iter(gated.values()))
        g.gate.set()
        assert RecordStore(rt, fast_env).get("t", "b") == {"v": 2}
    finally:
        for g in gated.values():
            g.gate.set()
        t.join(20)
    assert results["slow"] == {"v": 1}


def test_concurrent_misses_on_one_dek_share_one_unwrap(
    sqlite_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = sqlite_rt
    env_id = make_env(rt, "shared")
    RecordStore(rt, env_id).put("t", "a", {"v": 1})
    keys.flush(rt, env_id)
    original = rt.vault
    gated: dict[str, _GatedVault] = {}

    def vault(name_or_id: str) -> Any:
        inner = original(name_or_id)
        return gated.setdefault(inner.name, _GatedVault(inner))

    monkeypatch.setattr(rt, "vault", vault)
    out: list[Any] = []
    threads = [
        threading.Thread(target=lambda: out.append(RecordStore(rt, env_id).get("t", "a"))) for _ in range(4)
    ]
    for th in threads:
        th.start()
    assert _wait_entered(gated)
    g = next(iter(gated.values()))
    g.gate.set()
    for th in threads:
        th.join(20)
    assert out == [{"v": 1}] * 4
    assert g.unwraps == 1
