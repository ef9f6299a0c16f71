"""The process's Prometheus metrics: what happens in this process, counted as it happens.

State that lives in the state database (environments by state, policy health, running jobs, worker
heartbeats) is read at scrape time by `collectors.StateCollector`; the DEK cache's plain integer
counters are read at scrape time by `collectors.CacheCollector`. Everything here is process-local.

Labels carry ids and small fixed vocabularies only (vault kind, operation, outcome class, store,
route template, job kind): never names, values, paths or tokens. docs/OPERATIONS.md lists every
metric with its labels and cardinality.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.process_collector import ProcessCollector

disable_created_metrics()  # no `_created` twin of every series

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

VAULT_OUTCOMES = ("ok", "refused", "unreachable", "local")

vault_calls = Counter(
    "keyshift_vault_calls",
    "Key vault calls by vault kind, operation and outcome class (ok, refused, unreachable, local).",
    ["kind", "operation", "outcome"],
    registry=REGISTRY,
)
vault_seconds = Histogram(
    "keyshift_vault_call_seconds",
    "Key vault call latency by vault kind, operation and outcome class.",
    ["kind", "operation", "outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)

data_requests = Counter(
    "keyshift_data_requests",
    "Data-plane calls (records, audit, files) by store, operation and outcome (ok or the error code class).",
    ["store", "operation", "outcome"],
    registry=REGISTRY,
)
data_seconds = Histogram(
    "keyshift_data_request_seconds",
    "Data-plane call latency by store and operation.",
    ["store", "operation"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)

http_requests = Counter(
    "keyshift_http_requests",
    "HTTP requests served, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
http_seconds = Histogram(
    "keyshift_http_request_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)

revocations = Counter(
    "keyshift_revocations",
    "Environments disabled because their key became unusable, by source (monitor, data_plane).",
    ["source"],
    registry=REGISTRY,
)
reenables = Counter(
    "keyshift_reenables",
    "Disabled environments re-enabled after their key was proven usable again.",
    registry=REGISTRY,
)
deletions_scheduled = Counter(
    "keyshift_deletions_scheduled",
    "Environment deletions scheduled (a disabled or locked environment will be deleted when due).",
    registry=REGISTRY,
)
environments_deleted = Counter(
    "keyshift_environments_deleted",
    "Environments deleted by maintenance after their scheduled deletion date.",
    registry=REGISTRY,
)
policy_health_changes = Counter(
    "keyshift_policy_health_results",
    "Stored policy health results (recorded on change or on an explicit check), by status.",
    ["status"],
    registry=REGISTRY,
)

jobs_finished = Counter(
    "keyshift_jobs_finished",
    "Jobs that reached an end in this process, by kind and state (succeeded, failed, cancelled).",
    ["kind", "state"],
    registry=REGISTRY,
)
job_items = Counter(
    "keyshift_job_items_processed",
    "Job items (DEKs, rows, audit events, files) this worker processed, by job kind.",
    ["kind"],
    registry=REGISTRY,
)
job_rate = Gauge(
    "keyshift_job_items_per_second",
    "Recent item rate of the job this worker is driving, by job kind (0 when idle).",
    ["kind"],
    registry=REGISTRY,
)

worker_loops = Counter(
    "keyshift_worker_heartbeats",
    "Heartbeats this worker wrote to the state database.",
    registry=REGISTRY,
)
