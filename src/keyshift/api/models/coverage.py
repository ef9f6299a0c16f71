"""Key coverage and retirement reports (what a key version still covers).

These reports still name vaults, environments and tenants by name (and `env_coverage` its
environment by `id` and its tenant by `tenant_id`); moving them to {"id", "name"} references is
pending (docs/API.md, "Object shapes")."""

from __future__ import annotations

from typing import Any

from keyshift.api.models.base import Out, Timestamp


class KeyCoverage(Out):
    """Per key version: data keys, environments, stores and counts that depend on it."""

    vault: str
    key: str
    covered: bool
    versions: list[dict[str, Any]]
    all_versions: dict[str, Any]
    methods: dict[str, Any]
    at: Timestamp
    identity: str | None = None


class EnvironmentCoverage(Out):
    """Every key version an environment's data depends on."""

    environment: str
    id: str
    tenant_id: str
    binding: dict[str, Any]
    keys: list[dict[str, Any]]
    methods: dict[str, Any]
    at: Timestamp


class Retirement(Out):
    """What retiring a key version started and what still holds it."""

    vault: str
    key: str
    version: str
    current_version: str | None
    safe_now: bool
    safe_after: str | None
    jobs_started: list[dict[str, Any]]
    waiting_on_jobs: list[dict[str, Any]]
    needs_action: list[dict[str, Any]]
    retained_windows: list[dict[str, Any]]
    coverage: dict[str, Any]
    summary: str
