"""Tenants (`GET /tenants`, `GET /tenants/{tenant}`, BYOK flag changes)."""

from __future__ import annotations

from keyshift.api.models.base import Out, Timestamp


class TenantSummary(Out):
    """A tenant as listed."""

    id: str
    name: str
    byok_feature: bool
    sql_restriction: bool
    environments: int
    created_at: Timestamp


class ByokVaultStatus(Out):
    """The tenant's legacy BYOK vault (a reference with its state)."""

    id: str
    name: str
    state: str
    delete_after: Timestamp | None


class ByokKey(Out):
    id: str
    name: str
    region: str
    state: str
    source: str
    fingerprint: str | None
    activated_at: Timestamp | None
    created_at: Timestamp


class Tenant(TenantSummary):
    """A tenant with its legacy BYOK status."""

    byok_flag_ticket: str | None
    byok_flag_removed_at: Timestamp | None
    byok_vault: ByokVaultStatus | None
    final_byok_migration_at: Timestamp | None
    last_key_change_at: Timestamp | None
    locked_at: Timestamp | None
    byok_keys: list[ByokKey]
