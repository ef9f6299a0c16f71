"""Enterprise policies and their health check."""

from __future__ import annotations

from typing import Any

from keyshift.api.models.base import Out, Ref, Timestamp


class LinkedEnvironment(Out):
    """An environment linked to the policy (a reference with its state and status)."""

    id: str
    name: str
    state: str
    status: str


class PolicySummary(Out):
    """A policy as listed: a subset of `Policy`, same shapes."""

    id: str
    name: str
    tenant: Ref
    region: str
    kind: str
    vault: Ref
    key: str
    key_version: str | None
    identity: str
    state: str
    health: str
    health_reasons: list[str]
    health_checked_at: Timestamp | None
    environments: list[LinkedEnvironment]
    created_at: Timestamp


class Policy(PolicySummary):
    observed_key_version: str | None
    unhealthy_since: Timestamp | None


class PolicyHealth(Out):
    """The result of a health check (stored on the policy)."""

    policy: Ref
    health: str
    reasons: list[str]
    checked_at: Timestamp | None
    observed_key_version: str | None
    current_key_version: str | None
    vault_reachable: bool | None
    previous_health: str | None
    evidence: dict[str, Any] | None
    rotate_jobs: list[str]


class Rotation(Out):
    """Automatic rotation of the policy's key."""

    policy: Ref
    rotation_days: int | None
    pinned_version: str | None
