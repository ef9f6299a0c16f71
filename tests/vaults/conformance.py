"""The vault conformance suite: one set of behaviours every KeyVault provider must show.

How to use it for a provider (see test_local_conformance.py for a complete example):

    from conformance import VaultConformance   # tests/vaults is on sys.path for tests in it;
                                               # elsewhere: sys.path.insert(0, ".../tests/vaults")

    class TestMyVault(VaultConformance):
        key_spec = (KeyType.AES, 256)          # optional: what describe() must report

        @pytest.fixture
        def vault(self, ...) -> KeyVault: ...   # the vault under test

        @pytest.fixture
        def make_key(self, vault) -> Callable[[], tuple[KeyRef, str]]:
            # returns a factory: each call creates a fresh usable key and returns its KeyRef
            # and an identity holding get, wrapKey and unwrapKey on it
            ...

        # provider hooks (each may pytest.skip("reason") where the provider cannot do it)
        def revoke_access(self, ref, identity): ...   # remove the identity's grant
        def disable_key(self, ref): ...               # disable the key
        def destroy_key(self, ref): ...               # delete / schedule deletion / purge
        def rotate_key(self, ref): ...                # add a new current version (default: skip)
        def stranger_identity(self): ...              # an identity with no grants, or None to skip

`self.vault` is set to the `vault` fixture before each test, for the hooks' use.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import ClassVar

import pytest

from keyshift.errors import KeyInaccessibleError
from keyshift.vaults.base import (
    ALL_PERMISSIONS,
    AccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    KeyRef,
    KeyType,
    KeyVault,
    Permission,
    UnwrapError,
    WrappedKey,
)

MakeKey = Callable[[], tuple[KeyRef, str]]
# A wrapped key that is not genuine must raise one of these, never return bytes.
FAIL_CLOSED = (UnwrapError, KeyInaccessibleError, KeyNotFoundError)


def _dek() -> bytes:
    return os.urandom(32)


class VaultConformance:
    key_spec: ClassVar[tuple[KeyType, int] | None] = None
    vault: KeyVault

    # -- hooks (override) --------------------------------------------------------------------
    def revoke_access(self, ref: KeyRef, identity: str) -> None:
        pytest.skip("provider hook revoke_access not implemented")

    def disable_key(self, ref: KeyRef) -> None:
        pytest.skip("provider hook disable_key not implemented")

    def destroy_key(self, ref: KeyRef) -> None:
        pytest.skip("provider hook destroy_key not implemented")

    def rotate_key(self, ref: KeyRef) -> None:
        pytest.skip("provider does not support rotation")

    def stranger_identity(self) -> str | None:
        return f"conformance-stranger-{secrets.token_hex(4)}"

    @pytest.fixture(autouse=True)
    def _bind_vault(self, vault: KeyVault) -> None:
        self.vault = vault

    # -- the suite -----------------------------------------------------------------------------
    def test_vault_is_a_keyvault_and_reports_info(self, vault: KeyVault) -> None:
        assert isinstance(vault, KeyVault)
        info = vault.info()
        assert info.kind == vault.kind
        assert info.reachable is True

    def test_round_trip_of_a_32_byte_dek(self, vault: KeyVault, make_key: MakeKey) -> None:
        ref, who = make_key()
        dek = _dek()
        wrapped = vault.wrap(ref, dek, identity=who)
        assert wrapped.ciphertext and dek not in wrapped.ciphertext
        assert wrapped.key.name == ref.name and wrapped.key.version is not None
        assert vault.unwrap(wrapped, identity=who) == dek
        # Unwrapping again (a cached key object inside the adapter) gives the same answer.
        assert vault.unwrap(wrapped, identity=who) == dek

    def test_tampered_wrapped_key_fails_closed(self, vault: KeyVault, make_key: MakeKey) -> None:
        ref, who = make_key()
        dek = _dek()
        wrapped = vault.wrap(ref, dek, identity=who)
        ct = wrapped.ciphertext
        variants = {
            "first byte flipped": bytes([ct[0] ^ 0x01]) + ct[1:],
            "middle byte flipped": ct[: len(ct) // 2]
            + bytes([ct[len(ct) // 2] ^ 0x80])
            + ct[len(ct) // 2 + 1 :],
            "last byte flipped": ct[:-1] + bytes([ct[-1] ^ 0x01]),
            "truncated": ct[:-1],
            "extended": ct + b"\x00",
            "empty": b"",
        }
        for label, bad in variants.items():
            forged = WrappedKey(wrapped.key, wrapped.algorithm, bad, wrapped.meta)
            with pytest.raises(FAIL_CLOSED) as err:
                vault.unwrap(forged, identity=who)
            assert dek.hex() not in str(err.value), label
        # The genuine wrapped key still works afterwards.
        assert vault.unwrap(wrapped, identity=who) == dek

    def test_a_wrapped_key_does_not_unwrap_under_another_key(
        self, vault: KeyVault, make_key: MakeKey
    ) -> None:
        ref_a, who_a = make_key()
        ref_b, who_b = make_key()
        dek = _dek()
        wrapped_a = vault.wrap(ref_a, dek, identity=who_a)
        version_b = vault.wrap(ref_b, _dek(), identity=who_b).key.version
        moved = WrappedKey(ref_b.at(version_b), wrapped_a.algorithm, wrapped_a.ciphertext, wrapped_a.meta)
        with pytest.raises(FAIL_CLOSED):
            vault.unwrap(moved, identity=who_b)

    def test_describe_reports_type_size_enabled(self, vault: KeyVault, make_key: MakeKey) -> None:
        ref, who = make_key()
        info = vault.describe(ref)
        assert info.ref.name == ref.name
        assert info.enabled is True and info.deleted is False
        assert isinstance(info.key_type, KeyType)
        if info.key_type is KeyType.AES:
            assert info.size == 256
        else:
            assert info.size in (2048, 3072, 4096)
        if self.key_spec is not None:
            assert (info.key_type, info.size) == self.key_spec
        current = vault.wrap(ref, _dek(), identity=who).key.version
        assert info.current_version == current
        assert info.version_info(current).enabled is True

    def test_disabled_key_refuses_wrap_and_unwrap(self, vault: KeyVault, make_key: MakeKey) -> None:
        ref, who = make_key()
        wrapped = vault.wrap(ref, _dek(), identity=who)
        self.disable_key(ref)
        with pytest.raises(KeyDisabledError):
            vault.wrap(ref, _dek(), identity=who)
        with pytest.raises(KeyDisabledError):
            vault.unwrap(wrapped, identity=who)
        assert vault.describe(ref).enabled is False

    def test_revoked_identity_is_denied(self, vault: KeyVault, make_key: MakeKey) -> None:
        ref, who = make_key()
        wrapped = vault.wrap(ref, _dek(), identity=who)
        self.revoke_access(ref, who)
        with pytest.raises(AccessDeniedError):
            vault.wrap(ref, _dek(), identity=who)
        with pytest.raises(AccessDeniedError):
            vault.unwrap(wrapped, identity=who)
        left = vault.check_access(ref, who)
        assert Permission.WRAP not in left and Permission.UNWRAP not in left

    def test_destroyed_key_is_unusable(self, vault: KeyVault, make_key: MakeKey) -> None:
        ref, who = make_key()
        wrapped = vault.wrap(ref, _dek(), identity=who)
        self.destroy_key(ref)
        with pytest.raises((KeyNotFoundError, KeyDeletedError)):
            vault.wrap(ref, _dek(), identity=who)
        with pytest.raises((KeyNotFoundError, KeyDeletedError)):
            vault.unwrap(wrapped, identity=who)

    def test_rotation_keeps_old_wraps_readable(self, vault: KeyVault, make_key: MakeKey) -> None:
        ref, who = make_key()
        dek_old, dek_new = _dek(), _dek()
        old = vault.wrap(ref, dek_old, identity=who)
        self.rotate_key(ref)
        new = vault.wrap(ref, dek_new, identity=who)
        assert new.key.version != old.key.version
        assert vault.describe(ref).current_version == new.key.version
        assert vault.unwrap(old, identity=who) == dek_old
        assert vault.unwrap(new, identity=who) == dek_new
        # Pinning the old version still wraps under it.
        pinned = vault.wrap(ref.at(old.key.version), dek_new, identity=who)
        assert pinned.key.version == old.key.version
        assert vault.unwrap(pinned, identity=who) == dek_new

    def test_check_access_lists_what_is_granted(self, vault: KeyVault, make_key: MakeKey) -> None:
        ref, who = make_key()
        assert vault.check_access(ref, who) >= ALL_PERMISSIONS

    def test_identity_without_grant_is_denied(self, vault: KeyVault, make_key: MakeKey) -> None:
        stranger = self.stranger_identity()
        if stranger is None:
            pytest.skip("provider has no per-identity grants")
        ref, who = make_key()
        wrapped = vault.wrap(ref, _dek(), identity=who)
        with pytest.raises(AccessDeniedError):
            vault.wrap(ref, _dek(), identity=stranger)
        with pytest.raises(AccessDeniedError):
            vault.unwrap(wrapped, identity=stranger)
        assert vault.check_access(ref, stranger) == frozenset()

    def test_unknown_key_is_not_found(self, vault: KeyVault, make_key: MakeKey) -> None:
        _, who = make_key()
        missing = KeyRef(vault.name, f"conformance-missing-{secrets.token_hex(4)}")
        with pytest.raises(KeyNotFoundError):
            vault.wrap(missing, _dek(), identity=who)
        with pytest.raises(KeyNotFoundError):
            vault.describe(missing)
