"""pkcs11 provider against a real SoftHSM2 token: the shared conformance suite plus what is
specific to PKCS#11 (OAEP hash choice recorded, PIN by reference only, RFC 5649 key wrap)."""

from __future__ import annotations

import os
import secrets
from typing import Any

import pytest
from conformance import MakeKey, VaultConformance

from keyshift.vaults.base import KeyNotFoundError, KeyRef, KeyType, UnwrapError, WrappedKey
from keyshift.vaults.pkcs11 import Pkcs11Vault, id_of, version_of
from keyshift.vaults.pkcs11_mech import ALG_KWP, ALG_OAEP1, ALG_OAEP256
from keyshift.vaults.secrets import SecretUnavailableError
from servers import softhsm_token  # noqa: F401 - fixture

PIN_ENV = "KS_TEST_HSM_PIN"
WHO = "policy-identity-1"


@pytest.fixture(scope="module")
def hsm(softhsm_token: Any) -> Pkcs11Vault:  # noqa: F811
    os.environ[PIN_ENV] = softhsm_token.pin
    return Pkcs11Vault(
        "hsm",
        {"module": softhsm_token.module, "token_label": softhsm_token.label, "pin": {"env": PIN_ENV}},
    )


class _Pkcs11Hooks(VaultConformance):
    vault: Pkcs11Vault

    def revoke_access(self, ref: KeyRef, identity: str) -> None:
        pytest.skip("PKCS#11 has no per-identity grants: access is the token login (PIN)")

    def stranger_identity(self) -> str | None:
        return None  # no per-identity grants on a token

    def disable_key(self, ref: KeyRef) -> None:
        self.vault.set_enabled(ref.name, False)

    def destroy_key(self, ref: KeyRef) -> None:
        self.vault.purge_key(ref.name)

    def rotate_key(self, ref: KeyRef) -> None:
        self.vault.rotate_key(ref.name)


class TestPkcs11AES(_Pkcs11Hooks):
    key_spec = (KeyType.AES, 256)

    @pytest.fixture
    def vault(self, hsm: Pkcs11Vault) -> Pkcs11Vault:
        return hsm

    @pytest.fixture
    def make_key(self, hsm: Pkcs11Vault) -> MakeKey:
        def make() -> tuple[KeyRef, str]:
            name = f"aes-{secrets.token_hex(4)}"
            hsm.create_key(name, KeyType.AES, 256)
            return KeyRef(hsm.name, name), WHO

        return make


class TestPkcs11RSA(_Pkcs11Hooks):
    key_spec = (KeyType.RSA, 2048)

    @pytest.fixture
    def vault(self, hsm: Pkcs11Vault) -> Pkcs11Vault:
        return hsm

    @pytest.fixture
    def make_key(self, hsm: Pkcs11Vault) -> MakeKey:
        def make() -> tuple[KeyRef, str]:
            name = f"rsa-{secrets.token_hex(4)}"
            hsm.create_key(name, KeyType.RSA, 2048)
            return KeyRef(hsm.name, name), WHO

        return make


# -- provider specifics ------------------------------------------------------------------------------


def test_aes_uses_rfc5649_key_wrap_and_records_it(hsm: Pkcs11Vault) -> None:
    name = f"aes-{secrets.token_hex(4)}"
    hsm.create_key(name, KeyType.AES, 256)
    dek = os.urandom(32)
    wrapped = hsm.wrap(KeyRef("hsm", name), dek, identity=WHO)
    assert wrapped.algorithm == ALG_KWP and wrapped.meta["mechanism"] == ALG_KWP
    assert len(wrapped.ciphertext) == 40  # RFC 5649: 32-byte key + 8-byte integrity block
    # Unwrap follows the recorded algorithm: claiming RFC 3394 for the same bytes fails closed.
    with pytest.raises(UnwrapError):
        hsm.unwrap(WrappedKey(wrapped.key, "AES-KW", wrapped.ciphertext, {}), identity=WHO)
    assert hsm.unwrap(wrapped, identity=WHO) == dek


def test_rsa_oaep_hash_is_probed_and_recorded(hsm: Pkcs11Vault) -> None:
    name = f"rsa-{secrets.token_hex(4)}"
    hsm.create_key(name, KeyType.RSA, 2048)
    dek = os.urandom(32)
    wrapped = hsm.wrap(KeyRef("hsm", name), dek, identity=WHO)
    # SoftHSM2 2.6 supports only SHA-1/MGF1-SHA1 for OAEP; a token with SHA-256 gets RSA-OAEP-256.
    assert wrapped.algorithm in (ALG_OAEP1, ALG_OAEP256)
    assert wrapped.meta["mechanism"] == wrapped.algorithm
    assert len(wrapped.ciphertext) == 256
    assert hsm.unwrap(wrapped, identity=WHO) == dek
    other = ALG_OAEP256 if wrapped.algorithm == ALG_OAEP1 else ALG_OAEP1
    with pytest.raises(UnwrapError):  # the other hash does not decode: the record decides
        hsm.unwrap(WrappedKey(wrapped.key, other, wrapped.ciphertext, {}), identity=WHO)


def test_aes_key_in_rsa_wrapped_slot_fails_closed(hsm: Pkcs11Vault) -> None:
    aes, rsa = f"aes-{secrets.token_hex(4)}", f"rsa-{secrets.token_hex(4)}"
    hsm.create_key(aes, KeyType.AES, 256)
    hsm.create_key(rsa, KeyType.RSA, 2048)
    w = hsm.wrap(KeyRef("hsm", rsa), os.urandom(32), identity=WHO)
    with pytest.raises(UnwrapError):
        hsm.unwrap(WrappedKey(KeyRef("hsm", aes, "1"), w.algorithm, w.ciphertext, {}), identity=WHO)


def test_versions_are_cka_ids_and_current_is_highest(hsm: Pkcs11Vault) -> None:
    name = f"aes-{secrets.token_hex(4)}"
    hsm.create_key(name, KeyType.AES, 256)
    for _ in range(10):
        hsm.rotate_key(name)
    info = hsm.describe(KeyRef("hsm", name))
    assert info.current_version == "11"  # numeric, not lexical ("9" > "11" as text)
    assert [v.version for v in info.versions] == [str(i) for i in range(1, 12)]
    assert version_of(b"\x00\xff") == "hex:00ff" and id_of("hex:00ff") == b"\x00\xff"
    assert version_of(b"7") == "7" and id_of("7") == b"7"


def test_disable_one_version_leaves_the_others(hsm: Pkcs11Vault) -> None:
    from keyshift.vaults.base import KeyDisabledError

    name = f"aes-{secrets.token_hex(4)}"
    hsm.create_key(name, KeyType.AES, 256)
    old = hsm.wrap(KeyRef("hsm", name), b"a" * 32, identity=WHO)
    hsm.rotate_key(name)
    hsm.set_enabled(name, False, version="1")
    with pytest.raises(KeyDisabledError):
        hsm.unwrap(old, identity=WHO)
    new = hsm.wrap(KeyRef("hsm", name), b"b" * 32, identity=WHO)
    assert new.key.version == "2" and hsm.unwrap(new, identity=WHO) == b"b" * 32
    hsm.set_enabled(name, True, version="1")
    assert hsm.unwrap(old, identity=WHO) == b"a" * 32


def test_validity_dates_are_refused_not_ignored(hsm: Pkcs11Vault) -> None:
    from datetime import UTC, datetime

    from keyshift.errors import ConflictError

    name = f"aes-{secrets.token_hex(4)}"
    with pytest.raises(ConflictError, match="not supported by vault kind pkcs11"):
        hsm.create_key(name, KeyType.AES, 256, expires=datetime(2031, 1, 1, tzinfo=UTC))
    with pytest.raises(KeyNotFoundError):  # nothing was created
        hsm.describe(KeyRef("hsm", name))


def test_pin_from_file_and_missing_pin_reference(softhsm_token: Any, tmp_path: Any) -> None:  # noqa: F811
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm_token.pin + "\n")
    pin_file.chmod(0o600)
    cfg = {"module": softhsm_token.module, "token_label": softhsm_token.label}
    v = Pkcs11Vault("hsm-file", {**cfg, "pin": {"file": str(pin_file)}})
    assert v.info().reachable is True
    # An unset variable: the vault is unreachable with a reason naming the variable, not a value.
    v2 = Pkcs11Vault("hsm-env", {**cfg, "pin": {"env": "KS_TEST_UNSET_PIN_VAR"}})
    info = v2.info()
    assert info.reachable is False and "KS_TEST_UNSET_PIN_VAR" in info.detail
    with pytest.raises(SecretUnavailableError):
        v2.describe(KeyRef("hsm-env", "x"))
    # A world-readable PIN file is refused.
    pin_file.chmod(0o644)
    v3 = Pkcs11Vault("hsm-file2", {**cfg, "pin": {"file": str(pin_file)}})
    with pytest.raises(SecretUnavailableError, match="readable by other users"):
        v3.describe(KeyRef("hsm-file2", "x"))


def test_pin_never_kept_on_the_adapter(hsm: Pkcs11Vault, softhsm_token: Any) -> None:  # noqa: F811
    hsm.info()
    blob = repr(vars(hsm)) + repr(hsm.config)
    assert softhsm_token.pin not in blob


def test_unsupported_management_is_a_conflict(hsm: Pkcs11Vault) -> None:
    from keyshift.errors import ConflictError

    name = f"aes-{secrets.token_hex(4)}"
    hsm.create_key(name, KeyType.AES, 256)
    for call in (
        lambda: hsm.delete_key(name),
        lambda: hsm.grant(name, WHO, frozenset()),
        lambda: hsm.recover_key(name),
    ):
        with pytest.raises(ConflictError, match="not supported by vault kind pkcs11"):
            call()
    assert hsm.describe(KeyRef("hsm", name)).enabled is True  # nothing changed


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_session_loss_reconnects(hsm: Pkcs11Vault) -> None:
    name = f"aes-{secrets.token_hex(4)}"
    hsm.create_key(name, KeyType.AES, 256)
    w = hsm.wrap(KeyRef("hsm", name), b"s" * 32, identity=WHO)
    hsm._session.close()  # the token closed our session under us
    assert hsm.unwrap(w, identity=WHO) == b"s" * 32


def test_foreign_rsa_key_with_only_wrap_unwrap_capabilities(hsm: Pkcs11Vault) -> None:
    """HSM key-transport keys often allow C_WrapKey/C_UnwrapKey but not C_Encrypt/C_Decrypt."""
    from pkcs11 import Attribute, MechanismFlag
    from pkcs11 import KeyType as P11KeyType

    name = f"rsa-wrap-only-{secrets.token_hex(3)}"
    hsm._run(
        "customer key",
        lambda s: s.generate_keypair(
            P11KeyType.RSA,
            2048,
            label=name,
            id=b"7",
            store=True,
            capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
        ),
    )
    pub_encrypt = hsm._run(
        "t", lambda s: next(iter(s.get_objects({Attribute.LABEL: name, Attribute.ENCRYPT: True})), None)
    )
    assert pub_encrypt is None  # really no C_Encrypt on this key
    dek = os.urandom(32)
    w = hsm.wrap(KeyRef("hsm", name), dek, identity=WHO)
    assert w.key.version == "7" and w.algorithm in (ALG_OAEP1, ALG_OAEP256)
    assert hsm.unwrap(w, identity=WHO) == dek
    bad = WrappedKey(w.key, w.algorithm, w.ciphertext[:-1] + bytes([w.ciphertext[-1] ^ 1]), {})
    with pytest.raises(UnwrapError):
        hsm.unwrap(bad, identity=WHO)
