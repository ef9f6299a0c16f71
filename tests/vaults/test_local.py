"""Local vault specifics: validity window, per-version disable, soft delete / purge protection,
retention range, master key handling, no plaintext key material in the database, concurrency."""

from __future__ import annotations

import os

import pytest
from local_support import IDENTITY, new_key, new_vault

from keyshift.clock import FixedClock
from keyshift.control import audit_trail
from keyshift.runtime import Runtime
from keyshift.vaults.base import (
    ALL_PERMISSIONS,
    KeyType,
    Permission,
)

DEK = os.urandom(32)


def test_init_creates_platform_vault_key_and_grant(rt: Runtime) -> None:
    s = rt.settings
    vault = rt.vault(s.platform_vault)
    info = vault.info()
    assert (info.kind, info.soft_delete_days, info.purge_protection) == ("local", 90, True)
    from keyshift.vaults.base import KeyRef

    ref = KeyRef(s.platform_vault, s.platform_key)
    key = vault.describe(ref)
    assert (key.key_type, key.size, key.enabled) == (KeyType.AES, 256, True)
    assert vault.check_access(ref, s.platform_identity) == ALL_PERMISSIONS
    wrapped = vault.wrap(ref, DEK, identity=s.platform_identity)
    assert vault.unwrap(wrapped, identity=s.platform_identity) == DEK


@pytest.mark.parametrize("key_type,size", [(KeyType.AES, 256), (KeyType.RSA, 2048)])
def test_round_trip_and_counters(rt: Runtime, key_type: KeyType, size: int) -> None:
    vault = new_vault(rt)
    ref = new_key(vault, key_type, size)
    wrapped = vault.wrap(ref, DEK, identity=IDENTITY)
    assert wrapped.key.version == "1"
    assert vault.unwrap(wrapped, identity=IDENTITY) == DEK
    assert vault.calls["wrap"] == 1 and vault.calls["unwrap"] == 1
    assert vault.check_access(ref, IDENTITY) == frozenset(Permission)
    actions = [e["action"] for e in audit_trail.query(rt)]
    assert "key.create" in actions and "key.grant" in actions
    assert "key.wrap" not in actions and "key.unwrap" not in actions


def test_clock_is_the_fixture(rt: Runtime, clock: FixedClock) -> None:
    assert rt.clock is clock
