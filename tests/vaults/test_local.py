"""Local vault specifics: validity window, per-version disable, soft delete / purge protection,
retention range, master key handling, no plaintext key material in the database, concurrency."""

from __future__ import annotations

import multiprocessing
import os
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from local_support import IDENTITY, concurrent_worker, new_key, new_vault, snapshot
from sqlalchemy import select, text, update

from keyshift.clock import FixedClock
from keyshift.control import audit_trail
from keyshift.control.vaults import create_local_vault, list_vaults, purge_due_keys
from keyshift.db.models import LocalKey, LocalKeyVersion
from keyshift.errors import AlreadyExistsError, ConflictError, NotFoundError, UsageError
from keyshift.runtime import Runtime
from keyshift.vaults.base import (
    ALL_PERMISSIONS,
    AccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyExpiredError,
    KeyNotFoundError,
    KeyNotYetValidError,
    KeyRef,
    KeyType,
    Permission,
    WrappedKey,
)
from keyshift.vaults.local import LocalVault, master_key_for
from keyshift.vaults.local_crypto import material_ad

DEK = os.urandom(32)


def _audit(rt: Runtime) -> list[tuple[str, str]]:
    return [(e["action"], e["outcome"]) for e in audit_trail.query(rt)]


def test_init_creates_platform_vault_key_and_grant(rt: Runtime) -> None:
    s = rt.settings
    vault = rt.vault(s.platform_vault)
    info = vault.info()
    assert (info.kind, info.soft_delete_days, info.purge_protection) == ("local", 90, True)
    ref = KeyRef(s.platform_vault, s.platform_key)
    key = vault.describe(ref)
    assert (key.key_type, key.size, key.enabled) == (KeyType.AES, 256, True)
    assert vault.check_access(ref, s.platform_identity) == ALL_PERMISSIONS
    wrapped = vault.wrap(ref, DEK, identity=s.platform_identity)
    assert vault.unwrap(wrapped, identity=s.platform_identity) == DEK


@pytest.mark.parametrize("key_type,size", [(KeyType.AES, 256), (KeyType.RSA, 3072)])
def test_round_trip_counters_and_audit(sqlite_rt: Runtime, key_type: KeyType, size: int) -> None:
    rt = sqlite_rt
    vault = new_vault(rt)
    ref = new_key(vault, key_type, size)
    wrapped = vault.wrap(ref, DEK, identity=IDENTITY)
    assert wrapped.key.version == "1"
    assert wrapped.algorithm == ("AES-KWP" if key_type is KeyType.AES else "RSA-OAEP-256")
    assert vault.unwrap(wrapped, identity=IDENTITY) == DEK
    assert (vault.calls["wrap"], vault.calls["unwrap"]) == (1, 1)
    actions = _audit(rt)
    assert ("key.create", "ok") in actions and ("key.grant", "ok") in actions
    assert not [a for a, _ in actions if a in ("key.wrap", "key.unwrap")]  # counted, not audited


def test_validity_window_follows_the_clock(rt: Runtime, clock: FixedClock) -> None:
    vault = new_vault(rt)
    now = clock.now()
    ref = new_key(vault, not_before=now + timedelta(days=1), expires=now + timedelta(days=10))
    with pytest.raises(KeyNotYetValidError):
        vault.wrap(ref, DEK, identity=IDENTITY)
    clock.advance(days=1)
    wrapped = vault.wrap(ref, DEK, identity=IDENTITY)
    clock.advance(days=8, hours=23, minutes=59)
    assert vault.unwrap(wrapped, identity=IDENTITY) == DEK
    clock.advance(minutes=1)
    with pytest.raises(KeyExpiredError):
        vault.wrap(ref, DEK, identity=IDENTITY)
    with pytest.raises(KeyExpiredError):
        vault.unwrap(wrapped, identity=IDENTITY)
    # A rotation gives a fresh version without the old window.
    vault.rotate_key(ref.name)
    assert vault.unwrap(vault.wrap(ref, DEK, identity=IDENTITY), identity=IDENTITY) == DEK
    with pytest.raises(UsageError):
        vault.create_key("bad-window", KeyType.AES, 256, not_before=now, expires=now)


def test_per_version_disable(rt: Runtime) -> None:
    vault = new_vault(rt)
    ref = new_key(vault)
    w1 = vault.wrap(ref, DEK, identity=IDENTITY)
    vault.rotate_key(ref.name)
    w2 = vault.wrap(ref, DEK, identity=IDENTITY)
    assert (w1.key.version, w2.key.version) == ("1", "2")
    vault.set_enabled(ref.name, False, version="1")
    with pytest.raises(KeyDisabledError):
        vault.unwrap(w1, identity=IDENTITY)
    with pytest.raises(KeyDisabledError):
        vault.wrap(ref.at("1"), DEK, identity=IDENTITY)
    assert vault.unwrap(w2, identity=IDENTITY) == DEK
    info = vault.describe(ref)
    assert info.enabled and [v.enabled for v in info.versions] == [False, True]
    vault.set_enabled(ref.name, True, version="1")
    assert vault.unwrap(w1, identity=IDENTITY) == DEK
    with pytest.raises(KeyNotFoundError):
        vault.set_enabled(ref.name, False, version="9")
    with pytest.raises(KeyNotFoundError):
        vault.unwrap(WrappedKey(ref.at("9"), w1.algorithm, w1.ciphertext), identity=IDENTITY)


def test_soft_delete_recover_and_purge_protection_window(rt: Runtime, clock: FixedClock) -> None:
    vault = new_vault(rt, days=7, purge_protection=True)
    ref = new_key(vault)
    wrapped = vault.wrap(ref, DEK, identity=IDENTITY)
    info = vault.delete_key(ref.name)
    assert info.deleted and info.purge_after == clock.now() + timedelta(days=7)
    for call in (
        lambda: vault.wrap(ref, DEK, identity=IDENTITY),
        lambda: vault.unwrap(wrapped, identity=IDENTITY),
    ):
        with pytest.raises(KeyDeletedError):
            call()
    with pytest.raises(ConflictError):  # no changes to a deleted key
        vault.rotate_key(ref.name)
    with pytest.raises(AlreadyExistsError):  # the name stays taken while soft-deleted
        vault.create_key(ref.name, KeyType.AES, 256)
    vault.recover_key(ref.name)
    assert vault.unwrap(wrapped, identity=IDENTITY) == DEK
    with pytest.raises(ConflictError):
        vault.recover_key(ref.name)
    with pytest.raises(ConflictError) as not_deleted:
        vault.purge_key(ref.name)
    assert not_deleted.value.code == "key_not_deleted"

    vault.delete_key(ref.name)
    clock.advance(days=7, seconds=-1)
    before = snapshot(rt)
    with pytest.raises(ConflictError) as protected:
        vault.purge_key(ref.name)
    assert protected.value.code == "purge_protected"
    assert snapshot(rt) == before
    assert ("key.purge", "error") in _audit(rt)
    clock.advance(seconds=1)
    vault.purge_key(ref.name)
    with pytest.raises(KeyNotFoundError):
        vault.unwrap(wrapped, identity=IDENTITY)
    vault.create_key(ref.name, KeyType.AES, 256)  # the name is free again


def test_purge_without_protection_and_purge_due(sqlite_rt: Runtime, clock: FixedClock) -> None:
    vault = new_vault(sqlite_rt, days=7, purge_protection=False)
    a, b = new_key(vault), new_key(vault)
    vault.delete_key(a.name)
    vault.purge_key(a.name)  # allowed at once without purge protection
    with pytest.raises(KeyNotFoundError):
        vault.describe(a)
    vault.delete_key(b.name)
    assert vault.purge_due() == []
    assert purge_due_keys(sqlite_rt) == []
    clock.advance(days=7)
    assert purge_due_keys(sqlite_rt) == [f"{vault.name}/{b.name}"]
    assert vault.list_keys() == []
    assert ("key.purge", "ok") in _audit(sqlite_rt)


def test_soft_delete_retention_must_be_7_to_90_days(sqlite_rt: Runtime) -> None:
    before = list_vaults(sqlite_rt)
    for days in (0, 6, 91, -1, 365):
        with pytest.raises(UsageError) as err:
            create_local_vault(sqlite_rt, "bad-retention", soft_delete_days=days)
        assert "7-90" in err.value.message and err.value.code == "invalid_retention"
    assert list_vaults(sqlite_rt) == before
    assert _audit(sqlite_rt).count(("vault.create", "error")) == 5


def test_retention_bounds_are_accepted(sqlite_rt: Runtime) -> None:
    assert create_local_vault(sqlite_rt, "r7", soft_delete_days=7)["soft_delete_days"] == 7
    assert create_local_vault(sqlite_rt, "r90", soft_delete_days=90)["soft_delete_days"] == 90
    with pytest.raises(AlreadyExistsError):
        create_local_vault(sqlite_rt, "r7", soft_delete_days=7)


def test_bad_key_input_is_refused_and_changes_nothing(rt: Runtime) -> None:
    vault = new_vault(rt)
    ref = new_key(vault)
    before = snapshot(rt)
    bad_calls = [
        (UsageError, lambda: vault.create_key("k-rsa", KeyType.RSA, 1024)),
        (UsageError, lambda: vault.create_key("k-aes", KeyType.AES, 128)),
        (UsageError, lambda: vault.create_key("k-ec", "EC", 256)),  # type: ignore[arg-type]
        (UsageError, lambda: vault.create_key("bad name!", KeyType.AES, 256)),
        (AlreadyExistsError, lambda: vault.create_key(ref.name, KeyType.AES, 256)),
        (KeyNotFoundError, lambda: vault.rotate_key("missing")),
        (UsageError, lambda: vault.grant(ref.name, "", ALL_PERMISSIONS)),
        (UsageError, lambda: vault.grant(ref.name, "someone", frozenset())),
        (NotFoundError, lambda: vault.revoke_grant(ref.name, "nobody")),
        (UsageError, lambda: vault.wrap(ref, b"short", identity=IDENTITY)),
        (UsageError, lambda: vault.wrap(ref, b"x" * 65, identity=IDENTITY)),
        (UsageError, lambda: vault.wrap(KeyRef("other-vault", ref.name), DEK, identity=IDENTITY)),
    ]
    for expected, call in bad_calls:
        with pytest.raises(expected):
            call()
    assert snapshot(rt) == before
    errors = [a for a, outcome in _audit(rt) if outcome == "error"]
    assert {"key.create", "key.rotate", "key.grant", "key.revoke_grant"} <= set(errors)


def test_grants_are_checked_on_every_call(rt: Runtime) -> None:
    vault = new_vault(rt)
    ref = new_key(vault)
    wrapped = vault.wrap(ref, DEK, identity=IDENTITY)
    vault.grant(ref.name, "wrapper", frozenset({Permission.WRAP}))
    vault.wrap(ref, DEK, identity="wrapper")
    with pytest.raises(AccessDeniedError):
        vault.unwrap(wrapped, identity="wrapper")
    with pytest.raises(AccessDeniedError):
        vault.describe(ref, identity="wrapper")  # describe needs get
    assert vault.describe(ref, identity=IDENTITY).ref.name == ref.name
    assert vault.list_grants(ref.name) == {IDENTITY: ALL_PERMISSIONS, "wrapper": frozenset({Permission.WRAP})}
    vault.grant(ref.name, "wrapper", frozenset({Permission.UNWRAP}))  # replaces
    assert vault.unwrap(wrapped, identity="wrapper") == DEK
    with pytest.raises(AccessDeniedError):
        vault.wrap(ref, DEK, identity="wrapper")


def test_revocation_reaches_another_open_instance_immediately(
    rt: Runtime, home: Path, db_url: str | None
) -> None:
    vault = new_vault(rt)
    ref = new_key(vault)
    wrapped = vault.wrap(ref, DEK, identity=IDENTITY)
    with Runtime.open(home=home, database_url=db_url, clock=rt.clock, principal="operator:other") as other:
        reader = other.vault(vault.name)
        assert reader.unwrap(wrapped, identity=IDENTITY) == DEK  # decrypted key now cached there
        vault.revoke_grant(ref.name, IDENTITY)
        with pytest.raises(AccessDeniedError):
            reader.unwrap(wrapped, identity=IDENTITY)
        vault.grant(ref.name, IDENTITY, ALL_PERMISSIONS)
        vault.set_enabled(ref.name, False)
        with pytest.raises(KeyDisabledError):
            reader.unwrap(wrapped, identity=IDENTITY)
        vault.set_enabled(ref.name, True)
        vault.delete_key(ref.name)
        with pytest.raises(KeyDeletedError):
            reader.unwrap(wrapped, identity=IDENTITY)


def test_import_rsa_key_and_public_key(sqlite_rt: Runtime) -> None:
    vault = new_vault(sqlite_rt)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = vault.import_rsa_key("byok-1", private)
    assert (info.key_type, info.size) == (KeyType.RSA, 2048)
    pem = vault.public_key_pem("byok-1")
    expected = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pem == expected
    # Wrapped outside with the public key (RSA-OAEP-SHA256), unwrapped inside.
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    vault.grant("byok-1", IDENTITY, ALL_PERMISSIONS)
    outside = WrappedKey(
        KeyRef(vault.name, "byok-1", "1"), "RSA-OAEP-256", private.public_key().encrypt(DEK, oaep)
    )
    assert vault.unwrap(outside, identity=IDENTITY) == DEK
    with pytest.raises(UsageError):
        vault.import_rsa_key("small", rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505
    with pytest.raises(UsageError):
        vault.import_rsa_key("ec", ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]
    aes = new_key(vault)
    with pytest.raises(UsageError):
        vault.public_key_pem(aes.name)
    assert ("key.import", "ok") in _audit(sqlite_rt)


def _secret_of(rt: Runtime, vault: LocalVault, name: str) -> bytes:
    with rt.transaction() as s:
        key = s.scalars(select(LocalKey).where(LocalKey.vault_id == vault.id, LocalKey.name == name)).one()
        blob = s.scalars(select(LocalKeyVersion.material).where(LocalKeyVersion.key_id == key.id)).one()
    return master_key_for(rt).open(blob, material_ad(vault.id, name, "1"))


def test_key_material_is_never_in_the_database_in_plaintext(
    rt: Runtime, home: Path, db_url: str | None
) -> None:
    vault = new_vault(rt)
    aes = new_key(vault)
    rsa_ref = new_key(vault, KeyType.RSA, 2048)
    aes_secret = _secret_of(rt, vault, aes.name)
    rsa_der = _secret_of(rt, vault, rsa_ref.name)
    private = serialization.load_der_private_key(rsa_der, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    numbers = private.private_numbers()
    prime = numbers.p.to_bytes(128, "big")
    exponent = numbers.d.to_bytes(256, "big")
    master = (home / "master.key").read_bytes()
    needles = {
        "aes key": aes_secret,
        "rsa pkcs8 tail": rsa_der[-200:],
        "rsa d": exponent[:48],
        "rsa prime": prime[:48],
        "master": master,
    }
    vault.wrap(aes, DEK, identity=IDENTITY)
    rt.engine.dispose()
    if db_url is None:  # SQLite: the raw file bytes, WAL included
        haystack = b"".join(p.read_bytes() for p in home.glob("state.db*"))
    else:  # PostgreSQL: every column of every row of every table, as bytes
        with rt.engine.connect() as conn:
            tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))
            parts = []
            for (table,) in tables.all():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')).all():
                    parts += [v if isinstance(v, bytes) else str(v).encode() for v in row]
            haystack = b"\x00".join(parts)
    with rt.engine.connect() as conn:
        sealed = conn.execute(select(LocalKeyVersion.material)).scalars().all()
    assert sealed and all(blob in haystack for blob in sealed)  # we scanned where the keys live
    for label, needle in needles.items():
        assert needle not in haystack, label
        assert needle.hex().encode() not in haystack, label


def test_sealed_material_is_bound_to_its_key_and_version(sqlite_rt: Runtime) -> None:
    from keyshift.vaults.master_key import MasterKeyError

    vault = new_vault(sqlite_rt)
    a, b = new_key(vault), new_key(vault)
    wrapped_b = vault.wrap(b, DEK, identity=IDENTITY)
    with sqlite_rt.transaction() as s:
        ids = {k.name: k.id for k in s.scalars(select(LocalKey).where(LocalKey.vault_id == vault.id))}
        blob_a = s.scalars(
            select(LocalKeyVersion.material).where(LocalKeyVersion.key_id == ids[a.name])
        ).one()
        s.execute(
            update(LocalKeyVersion).where(LocalKeyVersion.key_id == ids[b.name]).values(material=blob_a)
        )
    fresh = Runtime.open(home=sqlite_rt.home.path, clock=sqlite_rt.clock)
    try:
        with pytest.raises(MasterKeyError):
            fresh.vault(vault.name).unwrap(wrapped_b, identity=IDENTITY)
    finally:
        fresh.close()


def test_concurrent_processes_never_corrupt_state(rt: Runtime, home: Path, db_url: str | None) -> None:
    vault = new_vault(rt)
    create_local_vault(rt, "shared")
    shared = rt.vault("shared")
    assert isinstance(shared, LocalVault)
    shared.create_key("k", KeyType.AES, 256)
    rounds = 5
    # fork is quick; the parent's pool is emptied first so no connection is shared with a child.
    rt.engine.dispose()
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2)
    procs = [
        ctx.Process(target=concurrent_worker, args=(str(home), db_url, t, rounds, start))
        for t in ("p1", "p2")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    del vault
    info = shared.describe(KeyRef("shared", "k"))
    assert [v.version for v in info.versions] == [str(i) for i in range(1, 2 * rounds + 2)]
    assert info.current_version == str(2 * rounds + 1)
    shared.set_enabled("k", True)
    shared.grant("k", IDENTITY, ALL_PERMISSIONS)
    for v in info.versions:
        w = shared.wrap(KeyRef("shared", "k", v.version), DEK, identity=IDENTITY)
        assert shared.unwrap(w, identity=IDENTITY) == DEK
    names = sorted(k.ref.name for k in shared.list_keys())
    assert names == sorted(["k"] + [f"{t}-{i}" for t in ("p1", "p2") for i in range(rounds)])
    assert len(shared.list_grants("k")) == 2 * rounds + 1
    assert sum(1 for a in _audit(rt) if a == ("key.rotate", "ok")) == 2 * rounds


def test_erase_local_vault_destroys_all_its_keys(rt: Runtime) -> None:
    from keyshift.control.vaults import erase_local_vault

    vault = new_vault(rt)
    ref = new_key(vault)
    other = new_vault(rt)
    kept = new_key(other)
    wrapped = vault.wrap(ref, DEK, identity=IDENTITY)
    result = erase_local_vault(rt, vault.name, reason="retention ended")
    assert result["state"] == "deleted" and result["keys_erased"] == 1
    with pytest.raises(KeyNotFoundError):  # an instance opened before the deletion
        vault.unwrap(wrapped, identity=IDENTITY)
    with rt.engine.connect() as conn:
        left = conn.execute(select(LocalKey.vault_id)).scalars().all()
    assert vault.id not in left and other.id in left
    assert other.unwrap(other.wrap(kept, DEK, identity=IDENTITY), identity=IDENTITY) == DEK
    with pytest.raises(NotFoundError):
        rt.vault(vault.name)
    before = snapshot(rt)
    with pytest.raises(ConflictError):
        erase_local_vault(rt, rt.settings.platform_vault)
    assert snapshot(rt) == before
    assert ("vault.delete", "ok") in _audit(rt) and ("vault.delete", "error") in _audit(rt)
