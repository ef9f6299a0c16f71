"""DEK cache counters: plain integers bumped under the cache's lock, summed per process at scrape
time (caches already garbage-collected keep counting in the totals)."""

from __future__ import annotations

import gc
import secrets

from keyshift.clock import FixedClock
from keyshift.crypto.cache import DekCache, process_stats
from keyshift.crypto.dek import DataKey


def _key() -> DataKey:
    return DataKey(secrets.token_bytes(16), secrets.token_bytes(32))


def test_hits_misses_evictions_and_flushes_are_counted(clock: FixedClock) -> None:
    cache = DekCache(max_age_seconds=60, max_uses=2, max_bytes=1 << 20, clock=clock, max_entries=2)
    a, b, c = _key(), _key(), _key()
    assert cache.get("env", a.id) is None  # miss
    cache.put("env", a)
    assert cache.get("env", a.id) is a  # hit
    assert cache.get("env", a.id, recheck=True) is a  # a re-check that finds it is a hit
    assert cache.get("env", b.id, recheck=True) is None  # a re-check that misses is not a 2nd miss
    cache.note_use("env", a.id, 10)
    cache.note_use("env", a.id, 10)
    assert cache.get("env", a.id) is None  # past max uses: evicted, and a miss
    cache.put("env", a)
    cache.put("env", b)
    cache.put("env", c)  # over max_entries: the oldest goes
    clock.advance(seconds=61)
    assert cache.sweep() == 2  # both left are past max age
    cache.put("env", a)
    cache.put("other", b)
    assert cache.flush("env") == 1
    s = cache.stats
    assert (s.hits, s.misses, s.evictions, s.flushed) == (2, 2, 4, 1)


def test_process_totals_survive_a_collected_cache(clock: FixedClock) -> None:
    before = process_stats()
    cache = DekCache(max_age_seconds=60, max_uses=10, max_bytes=1 << 20, clock=clock)
    k = _key()
    cache.get("env", k.id)
    cache.put("env", k)
    cache.get("env", k.id)
    mid = process_stats()
    assert (mid.hits - before.hits, mid.misses - before.misses) == (1, 1)
    del cache
    gc.collect()
    after = process_stats()
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 1)
