"""Vaults and keys."""

from __future__ import annotations

from keyshift.api.models.base import Out, Ref, Timestamp


class KeyVersion(Out):
    version: str
    enabled: bool
    not_before: Timestamp | None
    expires: Timestamp | None
    created_at: Timestamp | None


class Grant(Out):
    identity: str
    permissions: list[str]


class Key(Out):
    """A key of a vault (keys have no id of their own: vault + name identify one)."""

    vault: Ref
    name: str
    type: str
    size: int | None
    enabled: bool
    state: str
    current_version: str | None
    deleted: bool
    purge_after: Timestamp | None
    versions: list[KeyVersion]
    grants: list[Grant] | None = None


class Vault(Out):
    """A vault as listed."""

    id: str
    name: str
    kind: str
    owner: str
    tenant: Ref | None
    soft_delete_days: int | None
    purge_protection: bool
    state: str
    delete_after: Timestamp | None
    created_at: Timestamp


class VaultDetail(Vault):
    """A vault with its reachability and keys."""

    reachable: bool
    detail: str | None
    symmetric_only: bool | None = None
    key_management: bool
    keys: list[Key]


class KeyPurged(Out):
    vault: Ref
    name: str
    purged: bool


class KeyGrant(Out):
    vault: Ref
    name: str
    identity: str
    permissions: list[str]


class KeyGrantRevoked(Out):
    vault: Ref
    name: str
    identity: str
    revoked: bool
