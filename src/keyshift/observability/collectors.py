"""Metrics read at scrape time from this process's DEK caches.

`CacheCollector` reads the plain integer counters of every DEK cache in the process (no Prometheus
call on the cache's hot path). The state-database collector is the API's (`api/state_metrics.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from keyshift.crypto.cache import process_stats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


class CacheCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        s = process_stats()
        for name, value, doc in (
            ("keyshift_dek_cache_hits", s.hits, "DEK cache lookups answered from the cache."),
            (
                "keyshift_dek_cache_misses",
                s.misses,
                "DEK cache lookups that had to unwrap.",
            ),
            (
                "keyshift_dek_cache_evictions",
                s.evictions,
                "DEKs evicted past a bound.",
            ),
            ("keyshift_dek_cache_flushed", s.flushed, "DEKs dropped by a flush (revocation, key change)."),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
