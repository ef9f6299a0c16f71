"""Observability: Prometheus metrics, structured logs, health checks, request ids.

Low in the layering: it imports nothing above `db/` and `crypto/`, so services may call into it.
"""
