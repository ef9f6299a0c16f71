"""Record cipher: round trips, associated-data binding, header parsing, opaque failures."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyshift.crypto.dek import (
    DataKey,
    DataKeyExhaustedError,
    Keyring,
    UsageBudget,
    generate_dek,
)
from keyshift.crypto.format import (
    MAX_RECORD_BLOB,
    MAX_RECORD_PLAINTEXT,
    RECORD_HEADER_LEN,
    RECORD_OVERHEAD,
    parse_record_header,
)
from keyshift.crypto.records import MAX_AD_FIELD_BYTES, AssociatedData, RecordCipher, dek_id_of
from keyshift.errors import IntegrityError, UsageError

AD = AssociatedData("tenant-1", "env-1", "records", "accounts", "a1")
SECRET = b"Fabrikam secret plaintext 0123456789"


def assert_opaque(exc: IntegrityError, key: DataKey, plaintext: bytes = SECRET) -> None:
    text = f"{exc!s} {exc!r} {exc.to_dict()}"
    assert exc.message in {"ciphertext is malformed", "failed authentication", "unknown data key"}
    assert key.key.hex() not in text and repr(key.key) not in text
    assert plaintext.decode(errors="replace") not in text
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


@pytest.fixture
def key() -> DataKey:
    return generate_dek()


@pytest.fixture
def cipher(key: DataKey) -> RecordCipher:
    return RecordCipher(Keyring(key))


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1024, 65 << 10, 1 << 20])
def test_record_round_trip(cipher: RecordCipher, key: DataKey, size: int) -> None:
    plaintext = os.urandom(size)
    blob = cipher.encrypt(plaintext, AD)
    assert len(blob) == size + RECORD_OVERHEAD
    assert blob[:2] == b"KS" and blob[2] == 1 and blob[3] == 1
    assert dek_id_of(blob) == key.id
    assert cipher.decrypt(blob, AD) == plaintext
    assert cipher.decrypt(bytearray(blob), AD) == plaintext
    assert cipher.decrypt(memoryview(blob), AD) == plaintext


def test_fresh_nonce_every_encryption(cipher: RecordCipher) -> None:
    blobs = [cipher.encrypt(SECRET, AD) for _ in range(200)]
    nonces = {parse_record_header(b).nonce for b in blobs}
    assert len(nonces) == 200
    assert len({b[RECORD_HEADER_LEN:] for b in blobs}) == 200


@pytest.mark.parametrize("field", ["tenant", "environment", "store", "collection", "record_id"])
def test_ciphertext_moved_to_another_location_fails_auth(
    cipher: RecordCipher, key: DataKey, field: str
) -> None:
    blob = cipher.encrypt(SECRET, AD)
    values = {f: getattr(AD, f) for f in ("tenant", "environment", "store", "collection", "record_id")}
    values[field] = values[field] + "x"
    with pytest.raises(IntegrityError) as info:
        cipher.decrypt(blob, AssociatedData(**values))
    assert info.value.message == "failed authentication"
    assert_opaque(info.value, key)


def test_ad_encoding_is_unambiguous() -> None:
    # Same concatenation of field text, different split: must encode differently.
    a = AssociatedData("ab", "c", "s", "t", "r")
    b = AssociatedData("a", "bc", "s", "t", "r")
    c = AssociatedData("a", "b", "cs", "t", "r")
    assert len({a.encode(), b.encode(), c.encode()}) == 3
    assert a.encode() == (
        b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x01c" + b"\x00\x00\x00\x01s" + b"\x00\x00\x00\x01t"
        b"\x00\x00\x00\x01r"
    )
    assert AssociatedData("t", "e", "s", "c", "\u00e9").encode().endswith(b"\x00\x00\x00\x02\xc3\xa9")
    assert a.with_record("q") == AssociatedData("ab", "c", "s", "t", "q")


def test_split_ambiguity_does_not_decrypt(cipher: RecordCipher) -> None:
    blob = cipher.encrypt(SECRET, AssociatedData("ab", "c", "s", "t", "r"))
    with pytest.raises(IntegrityError):
        cipher.decrypt(blob, AssociatedData("a", "bc", "s", "t", "r"))


@pytest.mark.parametrize(
    "bad",
    [
        {"tenant": 5},
        {"record_id": None},
        {"collection": "x" * (MAX_AD_FIELD_BYTES + 1)},
        {"store": "\ud800"},
    ],
)
def test_bad_associated_data_is_a_usage_error(bad: dict[str, object]) -> None:
    values: dict[str, object] = {"tenant": "t", "environment": "e", "store": "s", "collection": "c"}
    values["record_id"] = "r"
    values.update(bad)
    with pytest.raises(UsageError):
        AssociatedData(**values)  # type: ignore[arg-type]


def test_flipped_byte_at_every_position_fails(cipher: RecordCipher, key: DataKey) -> None:
    blob = cipher.encrypt(SECRET, AD)
    for pos in range(len(blob)):
        for mask in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[pos] ^= mask
            with pytest.raises(IntegrityError) as info:
                cipher.decrypt(bytes(tampered), AD)
            assert_opaque(info.value, key)


def test_truncated_and_extended_blobs_fail(cipher: RecordCipher, key: DataKey) -> None:
    blob = cipher.encrypt(SECRET, AD)
    for cut in range(len(blob)):
        with pytest.raises(IntegrityError) as info:
            cipher.decrypt(blob[:cut], AD)
        assert_opaque(info.value, key)
    for extra in (b"\x00", os.urandom(16)):
        with pytest.raises(IntegrityError):
            cipher.decrypt(blob + extra, AD)


def test_oversized_blob_is_refused(
    cipher: RecordCipher, key: DataKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shrink the cap so a well-formed, otherwise valid blob is just over it.
    import keyshift.crypto.format as fmt
    import keyshift.crypto.records as rec

    blob = cipher.encrypt(SECRET, AD)
    monkeypatch.setattr(rec, "MAX_RECORD_BLOB", len(blob) - 1)
    monkeypatch.setattr(fmt, "MAX_RECORD_BLOB", len(blob) - 1)
    with pytest.raises(IntegrityError, match="malformed"):
        cipher.decrypt(blob, AD)
    with pytest.raises(IntegrityError, match="malformed"):
        cipher.decrypt(bytearray(blob), AD)
    with pytest.raises(IntegrityError, match="malformed"):
        dek_id_of(blob)
    monkeypatch.undo()
    assert cipher.decrypt(blob, AD) == SECRET
    assert MAX_RECORD_BLOB == MAX_RECORD_PLAINTEXT + RECORD_OVERHEAD


def test_oversized_plaintext_is_a_usage_error(cipher: RecordCipher) -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return MAX_RECORD_PLAINTEXT + 1

    with pytest.raises(UsageError):
        cipher.encrypt(Huge(b"x"), AD)


@pytest.mark.parametrize("junk", [None, "KS\x01\x01", 12, [1, 2], b"", b"KS", b"XX" + bytes(60)])
def test_non_blobs_are_malformed(cipher: RecordCipher, junk: object) -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        cipher.decrypt(junk, AD)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError, match="malformed"):
        dek_id_of(junk)  # type: ignore[arg-type]


def test_unknown_version_or_alg_is_malformed(cipher: RecordCipher) -> None:
    blob = bytearray(cipher.encrypt(SECRET, AD))
    for index, value in ((2, 2), (3, 2), (0, ord("k"))):
        bad = bytearray(blob)
        bad[index] = value
        with pytest.raises(IntegrityError, match="malformed"):
            dek_id_of(bytes(bad))


def test_unknown_dek_is_an_opaque_integrity_error(key: DataKey) -> None:
    other = generate_dek()
    blob = RecordCipher(Keyring(other)).encrypt(SECRET, AD)
    with pytest.raises(IntegrityError) as info:
        RecordCipher(Keyring(key)).decrypt(blob, AD)
    assert info.value.message == "unknown data key"
    assert_opaque(info.value, other)


def test_keyring_primary_encrypts_any_known_decrypts() -> None:
    old, new = generate_dek(), generate_dek()
    old_blob = RecordCipher(Keyring(old)).encrypt(SECRET, AD)
    rotated = RecordCipher(Keyring(new, [old]))
    new_blob = rotated.encrypt(SECRET, AD)
    assert dek_id_of(new_blob) == new.id
    assert rotated.decrypt(old_blob, AD) == SECRET
    assert rotated.decrypt(new_blob, AD) == SECRET
    # The old keyring cannot read what the new primary wrote.
    with pytest.raises(IntegrityError, match="unknown data key"):
        RecordCipher(Keyring(old)).decrypt(new_blob, AD)


def test_resolver_supplies_keys_lazily_and_is_asked_each_time() -> None:
    primary, lazy = generate_dek(), generate_dek()
    blob = RecordCipher(Keyring(lazy)).encrypt(SECRET, AD)
    asked: list[bytes] = []

    def resolve(dek_id: bytes) -> DataKey | None:
        asked.append(dek_id)
        return lazy if dek_id == lazy.id else None

    cipher = RecordCipher(Keyring(primary, resolve=resolve))
    assert cipher.decrypt(blob, AD) == SECRET
    assert cipher.decrypt(blob, AD) == SECRET
    assert asked == [lazy.id, lazy.id]  # the keyring keeps nothing the resolver returned
    stranger = RecordCipher(Keyring(generate_dek())).encrypt(SECRET, AD)
    with pytest.raises(IntegrityError, match="unknown data key"):
        cipher.decrypt(stranger, AD)


def test_resolver_returning_the_wrong_key_is_refused() -> None:
    primary, lazy = generate_dek(), generate_dek()
    blob = RecordCipher(Keyring(lazy)).encrypt(SECRET, AD)
    cipher = RecordCipher(Keyring(primary, resolve=lambda _id: generate_dek()))
    with pytest.raises(IntegrityError, match="unknown data key"):
        cipher.decrypt(blob, AD)


def test_resolver_errors_pass_through() -> None:
    from keyshift.errors import KeyInaccessibleError

    def resolve(dek_id: bytes) -> DataKey:
        raise KeyInaccessibleError("key disabled")

    blob = RecordCipher(Keyring(generate_dek())).encrypt(SECRET, AD)
    with pytest.raises(KeyInaccessibleError):
        RecordCipher(Keyring(generate_dek(), resolve=resolve)).decrypt(blob, AD)


def test_cipher_refuses_past_budget_limit(key: DataKey) -> None:
    budget = UsageBudget(limit=10)
    cipher = RecordCipher(Keyring(key), budget)
    blobs = [cipher.encrypt(b"x", AD) for _ in range(10)]
    with pytest.raises(DataKeyExhaustedError) as info:
        cipher.encrypt(b"x", AD)
    assert info.value.code == "dek_exhausted" and info.value.exit_code == 4
    assert budget.used == 10 and budget.remaining == 0
    # Decryption is not limited.
    assert all(cipher.decrypt(b, AD) == b"x" for b in blobs)


def test_cipher_takes_budget_in_chunks(key: DataKey) -> None:
    budget = UsageBudget(limit=1 << 31)
    cipher = RecordCipher(Keyring(key), budget, budget_chunk=100)
    for _ in range(250):
        cipher.encrypt(b"x", AD)
    assert budget.used == 300


def test_budget_is_exact_under_threads(key: DataKey) -> None:
    budget = UsageBudget(limit=1000)
    cipher = RecordCipher(Keyring(key), budget, budget_chunk=7)
    ok: list[int] = []
    refused: list[int] = []

    def work() -> None:
        for _ in range(300):
            try:
                cipher.encrypt(b"x", AD)
                ok.append(1)
            except DataKeyExhaustedError:
                refused.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 1000 and len(refused) == 200
    assert budget.used == 1000


_FUZZ_KEY = generate_dek()
_FUZZ_CIPHER = RecordCipher(Keyring(_FUZZ_KEY))
_FUZZ_BLOB = _FUZZ_CIPHER.encrypt(SECRET, AD)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=120),
        st.binary(max_size=100).map(lambda tail: _FUZZ_BLOB[:20] + tail),
        st.lists(
            st.tuples(st.integers(0, len(_FUZZ_BLOB) - 1), st.integers(1, 255)),
            min_size=1,
            max_size=3,
            unique_by=lambda f: f[0],
        ).map(lambda flips: bytes(b ^ dict(flips).get(i, 0) for i, b in enumerate(_FUZZ_BLOB))),
    )
)
def test_fuzz_record_decrypt_only_raises_integrity_errors(data: bytes) -> None:
    with pytest.raises(IntegrityError) as info:
        _FUZZ_CIPHER.decrypt(data, AD)
    assert info.value.message in {"ciphertext is malformed", "failed authentication", "unknown data key"}
