"""DEK cache bounds: age (via the injected clock), uses, bytes, entries; flush per scope."""

from __future__ import annotations

import threading

import pytest

from keyshift.clock import FixedClock
from keyshift.crypto.cache import DekCache
from keyshift.crypto.dek import generate_dek


def make(clock: FixedClock, **kw: float) -> DekCache:
    bounds = {"max_age_seconds": 60.0, "max_uses": 100, "max_bytes": 10_000}
    bounds.update(kw)
    return DekCache(clock=clock, **bounds)  # type: ignore[arg-type]


def test_put_get(clock: FixedClock) -> None:
    cache = make(clock)
    key = generate_dek()
    assert cache.get("env-1", key.id) is None
    cache.put("env-1", key)
    assert cache.get("env-1", key.id) is key
    assert cache.get("env-2", key.id) is None  # scopes are separate


def test_max_age_evicts_via_the_clock(clock: FixedClock) -> None:
    cache = make(clock, max_age_seconds=60)
    key = generate_dek()
    cache.put("env-1", key)
    clock.advance(seconds=59.9)
    assert cache.get("env-1", key.id) is key
    clock.advance(seconds=0.1)
    assert cache.get("env-1", key.id) is None
    assert len(cache) == 0  # evicted, reference dropped
    cache.put("env-1", key)  # re-put restarts the age
    assert cache.get("env-1", key.id) is key


def test_max_uses(clock: FixedClock) -> None:
    cache = make(clock, max_uses=3)
    key = generate_dek()
    cache.put("e", key)
    for _ in range(2):
        cache.note_use("e", key.id, 1)
    assert cache.get("e", key.id) is key
    cache.note_use("e", key.id, 1)
    assert cache.get("e", key.id) is None and len(cache) == 0


def test_max_bytes(clock: FixedClock) -> None:
    cache = make(clock, max_bytes=1000)
    key = generate_dek()
    cache.put("e", key)
    cache.note_use("e", key.id, 999)
    assert cache.get("e", key.id) is key
    cache.note_use("e", key.id, 1)
    assert cache.get("e", key.id) is None


def test_note_use_on_absent_key_is_a_no_op(clock: FixedClock) -> None:
    cache = make(clock)
    cache.note_use("e", b"\x00" * 16, 10)
    assert len(cache) == 0


def test_flush_one_scope_or_all(clock: FixedClock) -> None:
    cache = make(clock)
    a1, a2, b1 = generate_dek(), generate_dek(), generate_dek()
    cache.put("env-a", a1)
    cache.put("env-a", a2)
    cache.put("env-b", b1)
    assert cache.flush("env-a") == 2
    assert cache.get("env-a", a1.id) is None and cache.get("env-a", a2.id) is None
    assert cache.get("env-b", b1.id) is b1
    assert cache.flush("env-a") == 0
    assert cache.flush() == 1 and len(cache) == 0


def test_sweep_evicts_expired_without_lookups(clock: FixedClock) -> None:
    cache = make(clock, max_age_seconds=10)
    old, fresh = generate_dek(), generate_dek()
    cache.put("e", old)
    clock.advance(seconds=5)
    cache.put("e", fresh)
    clock.advance(seconds=5)
    assert cache.sweep() == 1
    assert cache.get("e", fresh.id) is fresh and len(cache) == 1


def test_max_entries_evicts_least_recently_used(clock: FixedClock) -> None:
    cache = DekCache(60, 100, 10_000, clock, max_entries=2)
    a, b, c = generate_dek(), generate_dek(), generate_dek()
    cache.put("e", a)
    cache.put("e", b)
    assert cache.get("e", a.id) is a  # a is now more recent than b
    cache.put("e", c)
    assert cache.get("e", b.id) is None
    assert cache.get("e", a.id) is a and cache.get("e", c.id) is c


def test_bad_bounds_and_values(clock: FixedClock) -> None:
    with pytest.raises(ValueError):
        DekCache(0, 1, 1, clock)
    with pytest.raises(TypeError):
        make(clock).put("e", b"raw key bytes")  # type: ignore[arg-type]


def test_repr_has_no_key_bytes(clock: FixedClock) -> None:
    cache = make(clock)
    key = generate_dek()
    cache.put("e", key)
    assert key.key.hex() not in repr(cache)


def test_thread_safety_uses_are_counted_exactly(clock: FixedClock) -> None:
    cache = make(clock, max_uses=4001, max_bytes=1 << 40)
    key = generate_dek()
    cache.put("e", key)

    def work() -> None:
        for _ in range(1000):
            cache.note_use("e", key.id, 10)
            cache.get("e", key.id)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("e", key.id) is key  # 4000 uses < 4001
    cache.note_use("e", key.id, 0)
    assert cache.get("e", key.id) is None
