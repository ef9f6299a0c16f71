"""Environments: the list entry, the encryption page, deletion and re-enable results."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from keyshift.api.models.base import Out, Ref, Timestamp


class EncryptionKey(Out):
    """The key that wraps the environment's data keys."""

    vault: Ref | None
    name: str | None
    version: str | None
    identity: str | None
    byok_key: Ref | None


class Encryption(Out):
    mode: str
    managed_by: str
    managed_by_display: str
    status: str
    policy: Ref | None
    policy_health: str | None
    key: EncryptionKey


class EnvironmentSummary(Out):
    """An environment as listed: a subset of `Environment`, same shapes."""

    id: str
    name: str
    tenant: Ref
    region: str
    type: str
    managed: bool
    state: str
    encryption: Encryption
    created_at: Timestamp


class StateEvidence(Out):
    """Why an environment is disabled: the vault's answer to the check that decided it."""

    source: str | None
    at: Timestamp
    vault: Ref | None
    key: str | None = Field(description="The key's name within the vault.")
    version: str | None
    check: str | None
    answer: str | None
    outcome: str | None
    confirmed: str | None


class KeyCheckEvidence(Out):
    """The round trip that proved the key before re-enabling."""

    vault: Ref
    kind: str | None
    key: str = Field(description="The key's name within the vault.")
    version: str | None
    identity: str | None
    check: str
    answer: str


class Environment(EnvironmentSummary):
    """The environment encryption page."""

    state_reason: str | None
    state_evidence: StateEvidence | None
    sql_restriction: bool
    features: list[str]
    stores: dict[str, str]
    linked_at: Timestamp | None
    migrated_from_byok_at: Timestamp | None
    restore_until: Timestamp | None
    delete_after: Timestamp | None


class EnvironmentDeleted(Out):
    environment: Ref
    state: str
    deleted_at: Timestamp
    previous: dict[str, Any]
    tenant_lock_ended: bool
    tenant_finalized: bool


class EnvironmentReEnabled(Out):
    """Re-enabled after a real wrap/unwrap round trip: what was verified."""

    environment: Ref
    state: str
    key: str
    identity: str | None
    deks_checked: int
    evidence: KeyCheckEvidence
