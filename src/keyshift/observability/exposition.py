"""Rendering the metrics of a process for a scrape: `/metrics` of the API, the worker's port.

The process registry (counters and histograms of this process, the DEK cache collector) is
rendered, followed by an optional extra registry (the API adds its state-database collector,
`api/state_metrics.py`).
"""

from __future__ import annotations

import threading

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, start_http_server

from keyshift.observability.collectors import CacheCollector
from keyshift.observability.metrics import REGISTRY

CONTENT_TYPE = CONTENT_TYPE_LATEST

_cache_lock = threading.Lock()
_cache_registered = False


def _ensure_cache_collector() -> None:
    global _cache_registered
    with _cache_lock:
        if not _cache_registered:
            REGISTRY.register(CacheCollector())
            _cache_registered = True


def render(state: CollectorRegistry | None = None) -> bytes:
    """The text exposition of this process's metrics (and of the state registry, if given)."""
    _ensure_cache_collector()
    out = generate_latest(REGISTRY)
    if state is not None:
        out += generate_latest(state)
    return out


def serve_process_metrics(port: int, host: str = "127.0.0.1") -> tuple[object, threading.Thread]:
    """Serve this process's metrics on host:port in a background thread (the worker's port)."""
    _ensure_cache_collector()
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    return server, thread
