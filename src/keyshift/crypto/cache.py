"""The unwrapped-DEK cache, bounded by age, uses and bytes, flushable per scope.

Scope is the environment id: revoking an environment's key flushes that scope and nothing else.
An entry past any bound is evicted the moment it is looked at (and by `sweep()`), and its
`DataKey` reference is dropped. (Python cannot promise to zero the bytes object itself; dropping
every reference the cache holds is what it can do.) Age is read from the injected clock, so tests
and drills move time explicitly.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from keyshift.clock import Clock
from keyshift.crypto.dek import DataKey


@dataclass(slots=True)
class _Entry:
    key: DataKey
    added: datetime
    uses: int = 0
    nbytes: int = 0


class _Ticks:
    """A counter bumped without a lock (`next` on an itertools.count is atomic), for hot paths."""

    __slots__ = ("_count", "_lock", "_reads")

    def __init__(self) -> None:
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._reads = 0

    def tick(self) -> None:
        next(self._count)

    def value(self) -> int:
        with self._lock:  # each read takes one number from the count itself
            value = next(self._count) - self._reads
            self._reads += 1
            return value


@dataclass(slots=True)
class CacheStats:
    """Plain integer counters (bumped under the cache's own lock; read by a metrics collector)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0  # past a bound (age, uses, bytes) or over max_entries
    flushed: int = 0  # dropped by flush() (revocation, key change)
    # Hits served by a hot key (stores/keys.py) without a cache lookup: counted lock-free.
    hot_hits: _Ticks = field(default_factory=_Ticks)


# Counters of caches already garbage-collected, so process totals never go down.
_retired = CacheStats()
_live: weakref.WeakSet[DekCache] = weakref.WeakSet()
_registry_lock = threading.Lock()


def _retire(stats: CacheStats) -> None:
    with _registry_lock:
        _retired.hits += stats.hits + stats.hot_hits.value()
        _retired.misses += stats.misses
        _retired.evictions += stats.evictions
        _retired.flushed += stats.flushed


def _track(cache: DekCache) -> None:
    with _registry_lock:
        _live.add(cache)
    weakref.finalize(cache, _retire, cache.stats)


def process_stats() -> CacheStats:
    """Totals over every DEK cache this process has had (for the metrics collector)."""
    with _registry_lock:
        out = CacheStats(_retired.hits, _retired.misses, _retired.evictions, _retired.flushed)
        caches = list(_live)
    for cache in caches:
        s = cache.stats
        out.hits += s.hits + s.hot_hits.value()
        out.misses += s.misses
        out.evictions += s.evictions
        out.flushed += s.flushed
    return out


class DekCache:
    """Thread-safe cache of unwrapped DEKs keyed by (scope, dek id)."""

    def __init__(
        self,
        max_age_seconds: float,
        max_uses: int,
        max_bytes: int,
        clock: Clock,
        max_entries: int = 10_000,
    ) -> None:
        if max_age_seconds <= 0 or max_uses <= 0 or max_bytes <= 0 or max_entries <= 0:
            raise ValueError("cache bounds must be positive")
        self.max_age_seconds = float(max_age_seconds)
        self.max_uses = max_uses
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, bytes], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()
        _track(self)

    def _expired(self, entry: _Entry, now: datetime) -> bool:
        return (
            (now - entry.added).total_seconds() >= self.max_age_seconds
            or entry.uses >= self.max_uses
            or entry.nbytes >= self.max_bytes
        )

    def get(self, scope: str, dek_id: bytes, *, recheck: bool = False) -> DataKey | None:
        """The cached key, or None if absent or past any bound (then it is evicted).

        `recheck=True` marks a second look by a caller that already counted its miss (a
        single-flight re-check): a hit is still counted, a miss is not counted twice.
        """
        slot = (scope, dek_id)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is None:
                self.stats.misses += not recheck
                return None
            if self._expired(entry, self._clock.now()):
                del self._entries[slot]
                self.stats.misses += not recheck
                self.stats.evictions += 1
                return None
            self._entries.move_to_end(slot)
            self.stats.hits += 1
            return entry.key

    def put(self, scope: str, key: DataKey) -> None:
        """Cache a freshly unwrapped key; its age, uses and bytes start from zero."""
        if not isinstance(key, DataKey):
            raise TypeError("key must be a DataKey")
        slot = (scope, key.id)
        with self._lock:
            self._entries.pop(slot, None)
            self._entries[slot] = _Entry(key, self._clock.now())
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.stats.evictions += 1

    def note_use(self, scope: str, dek_id: bytes, nbytes: int) -> None:
        """Count one use of the key over nbytes of data (no-op if the key is not cached)."""
        self.note_uses(scope, dek_id, 1, nbytes)

    def note_uses(self, scope: str, dek_id: bytes, uses: int, nbytes: int) -> None:
        """Count `uses` uses of the key over nbytes of data in all (no-op if the key is not cached)."""
        with self._lock:
            entry = self._entries.get((scope, dek_id))
            if entry is not None:
                entry.uses += max(0, int(uses))
                entry.nbytes += max(0, int(nbytes))

    def lease(self, scope: str, dek_id: bytes) -> tuple[DataKey, float, int, int] | None:
        """The cached key and what is left of its bounds: (key, seconds of age, uses, bytes).

        None if absent or past any bound (then it is evicted). A caller that serves lookups from
        its own copy (the record hot path) stays within what is left and reports its uses back
        with `note_uses`, so the bounds hold without a lock or a clock read per lookup.
        """
        slot = (scope, dek_id)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is None:
                return None
            now = self._clock.now()
            if self._expired(entry, now):
                del self._entries[slot]
                return None
            self._entries.move_to_end(slot)
            age_left = self.max_age_seconds - (now - entry.added).total_seconds()
            return entry.key, age_left, self.max_uses - entry.uses, self.max_bytes - entry.nbytes

    def flush(self, scope: str | None = None) -> int:
        """Drop every entry of one scope (or all scopes); returns how many were dropped."""
        with self._lock:
            if scope is None:
                count = len(self._entries)
                self._entries.clear()
                self.stats.flushed += count
                return count
            doomed = [slot for slot in self._entries if slot[0] == scope]
            for slot in doomed:
                del self._entries[slot]
            self.stats.flushed += len(doomed)
            return len(doomed)

    def sweep(self) -> int:
        """Evict every entry past a bound; returns how many were evicted."""
        with self._lock:
            now = self._clock.now()
            doomed = [slot for slot, entry in self._entries.items() if self._expired(entry, now)]
            for slot in doomed:
                del self._entries[slot]
            self.stats.evictions += len(doomed)
            return len(doomed)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"DekCache(entries={len(self)}, max_age_seconds={self.max_age_seconds})"
