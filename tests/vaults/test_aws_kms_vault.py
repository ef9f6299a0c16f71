"""aws-kms provider against moto's real HTTP server (started by the tests), with dummy credentials:
the shared conformance suite, encryption context binding, key state enforced by Keyshift (moto
does not), names by id/ARN/alias, and error mapping checked against a FAKE KMS endpoint that
answers with canned throttling / server / access errors."""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conformance import MakeKey, VaultConformance

from keyshift.errors import ConflictError, UsageError, VaultUnavailableError
from keyshift.vaults.aws_kms import ALGORITHM, AwsKmsVault, key_id_for
from keyshift.vaults.base import (
    AccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    KeyRef,
    KeyType,
    ThrottledError,
    UnwrapError,
    WrappedKey,
)
from servers import aws_test_env, moto_endpoint  # noqa: F401 - fixtures

WHO = "policy-identity-1"


@pytest.fixture(scope="module")
def kms(moto_endpoint: str, aws_test_env: dict[str, str]) -> AwsKmsVault:  # noqa: F811
    return AwsKmsVault("kms1", {"endpoint_url": moto_endpoint, "region": "us-east-1"}, soft_delete_days=7)


def _new_key(v: AwsKmsVault) -> KeyRef:
    name = f"kek-{secrets.token_hex(4)}"
    v.create_key(name, KeyType.AES, 256)
    return KeyRef(v.name, name)


class TestAwsKmsConformance(VaultConformance):
    key_spec = (KeyType.AES, 256)
    vault: AwsKmsVault

    @pytest.fixture
    def vault(self, kms: AwsKmsVault) -> AwsKmsVault:
        return kms

    @pytest.fixture
    def make_key(self, kms: AwsKmsVault) -> MakeKey:
        return lambda: (_new_key(kms), WHO)

    def revoke_access(self, ref: KeyRef, identity: str) -> None:
        pytest.skip(
            "KMS access is IAM/key policy of the AWS principal; Keyshift identities are not principals"
        )

    def stranger_identity(self) -> str | None:
        return None

    def disable_key(self, ref: KeyRef) -> None:
        self.vault.set_enabled(ref.name, False)

    def destroy_key(self, ref: KeyRef) -> None:
        self.vault.delete_key(ref.name)  # ScheduleKeyDeletion: pending deletion

    def rotate_key(self, ref: KeyRef) -> None:
        self.vault.rotate_key(ref.name)  # a new KMS key behind the same alias


# -- context, names, state -------------------------------------------------------------------------


def test_encryption_context_is_bound(kms: AwsKmsVault) -> None:
    ref = _new_key(kms)
    w = kms.wrap(ref, b"d" * 32, identity=WHO, context={"tenant": "t1", "env": "e1"})
    assert w.algorithm == ALGORITHM
    for other in ({"tenant": "t1", "env": "e2"}, {"tenant": "t1"}, None):
        with pytest.raises(UnwrapError):
            kms.unwrap(w, identity=WHO, context=other)
    assert kms.unwrap(w, identity=WHO, context={"env": "e1", "tenant": "t1"}) == b"d" * 32
    with pytest.raises(UsageError):
        kms.wrap(ref, b"d" * 32, identity=WHO, context={"n": 1})  # type: ignore[dict-item]


def test_key_by_id_arn_and_alias(kms: AwsKmsVault) -> None:
    ref = _new_key(kms)
    info = kms.describe(ref)
    key_id = info.current_version
    arn = kms._meta(key_id)["Arn"]
    for name in (key_id, arn, f"alias/{ref.name}", ref.name):
        w = kms.wrap(KeyRef(kms.name, name), b"n" * 32, identity=WHO)
        assert w.key.version == key_id
        assert kms.unwrap(w, identity=WHO) == b"n" * 32
    assert key_id_for("plain") == "alias/plain"
    assert key_id_for("mrk-1234567890abcdef1234567890abcdef") == "mrk-1234567890abcdef1234567890abcdef"


def test_state_is_enforced_by_keyshift_not_the_server(kms: AwsKmsVault) -> None:
    """moto encrypts with a disabled key; the provider refuses it after DescribeKey."""
    ref = _new_key(kms)
    w = kms.wrap(ref, b"s" * 32, identity=WHO)
    kms.set_enabled(ref.name, False)
    # The server itself does not refuse (that is the gap the provider closes):
    raw = kms.client.encrypt(KeyId=w.key.version, Plaintext=b"x" * 32)
    assert raw["CiphertextBlob"]
    with pytest.raises(KeyDisabledError):
        kms.wrap(ref, b"s" * 32, identity=WHO)
    with pytest.raises(KeyDisabledError):
        kms.unwrap(w, identity=WHO)
    kms.set_enabled(ref.name, True)
    kms.delete_key(ref.name)
    info = kms.describe(ref)
    assert info.deleted is True and info.purge_after is not None
    with pytest.raises(KeyDeletedError):
        kms.unwrap(w, identity=WHO)
    kms.recover_key(ref.name)
    assert kms.unwrap(w, identity=WHO) == b"s" * 32


def test_rotation_by_alias_keeps_old_key_usable(kms: AwsKmsVault) -> None:
    ref = _new_key(kms)
    old = kms.wrap(ref, b"o" * 32, identity=WHO)
    kms.rotate_key(ref.name)
    new = kms.wrap(ref, b"n" * 32, identity=WHO)
    assert new.key.version != old.key.version
    assert kms.unwrap(old, identity=WHO) == b"o" * 32
    with pytest.raises(ConflictError, match="not supported by vault kind aws-kms"):
        kms.rotate_key(old.key.version or "")


def test_unsupported_management_is_a_conflict(kms: AwsKmsVault) -> None:
    ref = _new_key(kms)
    for call in (
        lambda: kms.create_key(f"r-{secrets.token_hex(3)}", KeyType.RSA, 2048),
        lambda: kms.grant(ref.name, WHO, frozenset()),
        lambda: kms.revoke_grant(ref.name, WHO),
        lambda: kms.purge_key(ref.name),
    ):
        with pytest.raises(ConflictError, match="not supported by vault kind aws-kms"):
            call()
    assert kms.describe(ref).enabled is True


def test_list_keys_names_aliases(kms: AwsKmsVault) -> None:
    ref = _new_key(kms)
    assert ref.name in {k.ref.name for k in kms.list_keys()}


def test_unreachable_endpoint_is_retryable_and_info_does_not_raise(aws_test_env: dict[str, str]) -> None:  # noqa: F811
    from integration.ext_servers import free_port

    v = AwsKmsVault("kms-down", {"endpoint_url": f"http://127.0.0.1:{free_port()}", "region": "us-east-1"})
    info = v.info()
    assert info.reachable is False and "unreachable" in info.detail
    with pytest.raises(VaultUnavailableError) as err:
        v.wrap(KeyRef("kms-down", "k"), b"x" * 32, identity=WHO)
    assert err.value.retryable


# -- error mapping against a FAKE endpoint ----------------------------------------------------------


class _CannedKms(BaseHTTPRequestHandler):
    """FAKE KMS: answers every request with the status/code set on the server object."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, code = self.server.canned  # type: ignore[attr-defined]
        body = json.dumps({"__type": code, "message": "canned"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def canned_kms(aws_test_env: dict[str, str]) -> Iterator[tuple[Any, AwsKmsVault]]:  # noqa: F811
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CannedKms)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server, AwsKmsVault("kms-fake", {"endpoint_url": url, "region": "us-east-1"})
    server.shutdown()
    server.server_close()
    t.join(timeout=5)


@pytest.mark.parametrize(
    ("status", "code", "expected", "retryable"),
    [
        (400, "ThrottlingException", ThrottledError, True),
        (429, "TooManyRequestsException", ThrottledError, True),
        (500, "KMSInternalException", VaultUnavailableError, True),
        (503, "ServiceUnavailable", VaultUnavailableError, True),
        (400, "AccessDeniedException", AccessDeniedError, False),
        (400, "NotFoundException", KeyNotFoundError, False),
        (400, "DisabledException", KeyDisabledError, False),
        (400, "KMSInvalidStateException", KeyDisabledError, False),
    ],
)
def test_error_mapping(
    canned_kms: tuple[Any, AwsKmsVault], status: int, code: str, expected: type, retryable: bool
) -> None:
    server, v = canned_kms
    server.canned = (status, code)
    with pytest.raises(expected) as err:
        v.wrap(KeyRef(v.name, "k"), os.urandom(32), identity=WHO)
    assert err.value.retryable is retryable
    assert type(err.value) is expected or issubclass(type(err.value), expected)


def test_garbage_ciphertext_fails_closed(kms: AwsKmsVault) -> None:
    ref = _new_key(kms)
    w = kms.wrap(ref, b"c" * 32, identity=WHO)
    forged = WrappedKey(w.key, w.algorithm, b"\x01" * 200, {})
    # AWS answers InvalidCiphertextException (-> UnwrapError); moto answers AccessDeniedException for
    # a blob naming no key. Either way: a typed error, never bytes.
    with pytest.raises((UnwrapError, AccessDeniedError)):
        kms.unwrap(forged, identity=WHO)


def test_invalid_ciphertext_code_maps_to_unwrap_error(canned_kms: tuple[Any, AwsKmsVault]) -> None:
    from botocore.exceptions import ClientError

    from keyshift.vaults.aws_kms import _map_client_error

    server, v = canned_kms
    for code in ("InvalidCiphertextException", "IncorrectKeyException"):
        server.canned = (400, code)
        with pytest.raises(ClientError) as raw:
            v.client.decrypt(CiphertextBlob=b"x" * 64)
        assert isinstance(_map_client_error(raw.value, "key k"), UnwrapError)
