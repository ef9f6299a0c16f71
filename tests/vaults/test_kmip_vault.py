"""kmip provider against a real PyKMIP server over mutual TLS (started by the tests): the shared
conformance suite plus the envelope (tamper/context detection), state mapping and connectivity."""

from __future__ import annotations

import os
import secrets
import struct
from typing import Any

import pytest
from conformance import MakeKey, VaultConformance

from keyshift.errors import ConflictError, VaultUnavailableError
from keyshift.vaults.base import (
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    KeyRef,
    KeyType,
    Permission,
    UnwrapError,
    VaultLocalError,
    WrappedKey,
)
from keyshift.vaults.kmip import KmipVault
from keyshift.vaults.kmip_envelope import ALGORITHM
from servers import kmip_server  # noqa: F401 - fixture

WHO = "policy-identity-1"


def kmip_config(server: Any) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "cert": str(server.pki.client_cert),
        "key": str(server.pki.client_key),
        "ca": str(server.pki.ca),
    }


@pytest.fixture(scope="module")
def kmip(kmip_server: Any) -> KmipVault:  # noqa: F811
    return KmipVault("kmip1", kmip_config(kmip_server))


def _new_key(v: KmipVault) -> KeyRef:
    name = f"kek-{secrets.token_hex(4)}"
    v.create_key(name, KeyType.AES, 256)
    return KeyRef(v.name, name)


class TestKmipConformance(VaultConformance):
    key_spec = (KeyType.AES, 256)
    vault: KmipVault

    @pytest.fixture
    def vault(self, kmip: KmipVault) -> KmipVault:
        return kmip

    @pytest.fixture
    def make_key(self, kmip: KmipVault) -> MakeKey:
        return lambda: (_new_key(kmip), WHO)

    def revoke_access(self, ref: KeyRef, identity: str) -> None:
        pytest.skip("KMIP access is the TLS client identity's (server operation policy), not per identity")

    def stranger_identity(self) -> str | None:
        return None

    def disable_key(self, ref: KeyRef) -> None:
        self.vault.set_enabled(ref.name, False)  # KMIP Revoke (cessation of operation) -> Deactivated

    def destroy_key(self, ref: KeyRef) -> None:
        self.vault.purge_key(ref.name)  # Revoke + Destroy

    def rotate_key(self, ref: KeyRef) -> None:
        self.vault.rotate_key(ref.name)


# -- the envelope ------------------------------------------------------------------------------------


def test_every_byte_of_the_envelope_is_authenticated(kmip: KmipVault) -> None:
    ref = _new_key(kmip)
    dek = os.urandom(32)
    w = kmip.wrap(ref, dek, identity=WHO, context={"env": "e1"})
    assert w.algorithm == ALGORITHM and len(w.ciphertext) == 1 + 16 + 2 + 48 + 32
    for i in range(len(w.ciphertext)):
        bad = bytearray(w.ciphertext)
        bad[i] ^= 0x04
        with pytest.raises(UnwrapError):
            kmip.unwrap(WrappedKey(w.key, w.algorithm, bytes(bad), {}), identity=WHO, context={"env": "e1"})
    assert kmip.unwrap(w, identity=WHO, context={"env": "e1"}) == dek


def test_context_is_bound(kmip: KmipVault) -> None:
    ref = _new_key(kmip)
    w = kmip.wrap(ref, b"d" * 32, identity=WHO, context={"tenant": "t1", "env": "e1"})
    for other in ({"tenant": "t1", "env": "e2"}, {"tenant": "t1"}, None):
        with pytest.raises(UnwrapError):
            kmip.unwrap(w, identity=WHO, context=other)
    # Key order does not matter (canonical form).
    assert kmip.unwrap(w, identity=WHO, context={"env": "e1", "tenant": "t1"}) == b"d" * 32


def test_length_field_and_version_are_checked_before_use(kmip: KmipVault) -> None:
    ref = _new_key(kmip)
    w = kmip.wrap(ref, b"d" * 32, identity=WHO)
    ct = w.ciphertext
    liar = ct[:17] + struct.pack(">H", 0xFFFF) + ct[19:]
    for bad in (liar, b"\x02" + ct[1:], ct[:40], ct + b"\x00" * 16, b"\x01" * 5000):
        with pytest.raises(UnwrapError):
            kmip.unwrap(WrappedKey(w.key, w.algorithm, bad, {}), identity=WHO)


def test_wrapped_key_moved_to_another_name_fails(kmip: KmipVault) -> None:
    ref = _new_key(kmip)
    w = kmip.wrap(ref, b"d" * 32, identity=WHO)
    # Same object id, another claimed name: the tag binds the name too.
    moved = WrappedKey(KeyRef(kmip.name, "another-name", w.key.version), w.algorithm, w.ciphertext, {})
    with pytest.raises(UnwrapError):
        kmip.unwrap(moved, identity=WHO)


# -- states -----------------------------------------------------------------------------------------


def test_states_map_to_typed_errors(kmip: KmipVault) -> None:
    from kmip import enums

    ref = _new_key(kmip)
    w = kmip.wrap(ref, b"d" * 32, identity=WHO)
    uid = w.key.version
    assert uid is not None
    # Compromised (revoked for key compromise) -> deleted for good.
    kmip._run("t", lambda c: c.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, uid))
    with pytest.raises(KeyDeletedError):
        kmip.unwrap(w, identity=WHO)
    assert kmip.check_access(ref, WHO) == frozenset({Permission.GET})
    # A deactivated key cannot come back: re-enabling is refused, not faked.
    ref2 = _new_key(kmip)
    kmip.set_enabled(ref2.name, False)
    with pytest.raises(KeyDisabledError):
        kmip.wrap(ref2, b"d" * 32, identity=WHO)
    with pytest.raises(ConflictError, match="not supported by vault kind kmip"):
        kmip.set_enabled(ref2.name, True)
    # Destroyed objects are gone.
    kmip.purge_key(ref2.name)
    with pytest.raises(KeyNotFoundError):
        kmip.describe(ref2)


def test_key_named_by_unique_identifier(kmip: KmipVault) -> None:
    ref = _new_key(kmip)
    uid = kmip.describe(ref).current_version
    by_uid = KeyRef(kmip.name, uid)
    w = kmip.wrap(by_uid, b"u" * 32, identity=WHO)
    assert w.key.version == uid
    assert kmip.unwrap(w, identity=WHO) == b"u" * 32
    with pytest.raises(ConflictError):
        kmip.rotate_key(uid)


def test_rsa_and_dates_are_not_supported(kmip: KmipVault) -> None:
    from datetime import UTC, datetime

    with pytest.raises(ConflictError, match="not supported by vault kind kmip"):
        kmip.create_key(f"r-{secrets.token_hex(3)}", KeyType.RSA, 2048)
    with pytest.raises(ConflictError):
        kmip.create_key(
            f"r-{secrets.token_hex(3)}", KeyType.AES, 256, expires=datetime(2030, 1, 1, tzinfo=UTC)
        )


# -- connectivity -----------------------------------------------------------------------------------


def test_dropped_connection_reconnects(kmip: KmipVault) -> None:
    ref = _new_key(kmip)
    w = kmip.wrap(ref, b"r" * 32, identity=WHO)
    kmip._client.proxy.socket.close()  # the server (or a middlebox) dropped us
    assert kmip.unwrap(w, identity=WHO) == b"r" * 32


def test_unreachable_server_is_retryable_and_info_does_not_raise(kmip_server: Any) -> None:  # noqa: F811
    from integration.ext_servers import free_port

    cfg = {**kmip_config(kmip_server), "port": free_port(), "timeout": 2.0}
    v = KmipVault("kmip-down", cfg)
    info = v.info()
    assert info.reachable is False and "unreachable" in info.detail
    with pytest.raises(VaultUnavailableError) as err:
        v.wrap(KeyRef("kmip-down", "k"), b"x" * 32, identity=WHO)
    assert err.value.retryable


def test_client_certificate_from_another_ca_is_refused(kmip_server: Any, tmp_path: Any) -> None:  # noqa: F811
    from integration.ext_servers import make_pki

    rogue = make_pki(tmp_path / "rogue")
    cfg = {**kmip_config(kmip_server), "cert": str(rogue.client_cert), "key": str(rogue.client_key)}
    v = KmipVault("kmip-rogue", cfg)
    assert v.info().reachable is False
    with pytest.raises(VaultLocalError):  # this process's TLS setup, not the key owner's answer
        v.describe(KeyRef("kmip-rogue", "k"))


def test_server_certificate_must_name_the_host(kmip_server: Any) -> None:  # noqa: F811
    from keyshift.vaults.kmip_envelope import check_server_name as _check_server_name

    # Real connection by DNS name: the test certificate names localhost and 127.0.0.1.
    ok = KmipVault("kmip-localhost", {**kmip_config(kmip_server), "host": "localhost"})
    assert ok.info().reachable is True
    # The check itself, on the peer-certificate dicts ssl returns.
    cert = {"subjectAltName": (("DNS", "kms.example.com"), ("IP Address", "10.0.0.5"))}
    _check_server_name(cert, "kms.example.com")
    _check_server_name(cert, "10.0.0.5")
    for host in ("evil.example.com", "10.0.0.6", "example.com"):
        with pytest.raises(VaultLocalError, match="does not name"):
            _check_server_name(cert, host)
    _check_server_name({"subjectAltName": (("DNS", "*.example.com"),)}, "kms.example.com")
    with pytest.raises(VaultLocalError):
        _check_server_name({"subjectAltName": (("DNS", "*.example.com"),)}, "a.b.example.com")
    with pytest.raises(VaultLocalError):
        _check_server_name({}, "kms.example.com")


def test_server_goes_away_and_comes_back(tmp_path: Any) -> None:
    """A real outage: the KMIP server stops (typed, retryable errors) and restarts on the same port
    with the same key database; the adapter reconnects and old wrapped keys still unwrap."""
    from integration.ext_servers import ServerUnavailable, run_kmip_server

    try:
        first = run_kmip_server(tmp_path / "srv")
        srv = first.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(f"PyKMIP server unavailable: {exc}")
    try:
        v = KmipVault("kmip-flaky", {**kmip_config(srv), "timeout": 3.0})
        ref = _new_key(v)
        w = v.wrap(ref, b"o" * 32, identity=WHO)
    finally:
        first.__exit__(None, None, None)
    with pytest.raises(VaultUnavailableError) as err:
        v.unwrap(w, identity=WHO)
    assert err.value.retryable
    assert v.info().reachable is False
    with run_kmip_server(tmp_path / "srv", port=srv.port):
        assert v.unwrap(w, identity=WHO) == b"o" * 32
        assert v.info().reachable is True
