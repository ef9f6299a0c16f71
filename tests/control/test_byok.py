"""Legacy BYOK: generate (PKCS#12, 0600) and import tenant keys with clear errors, activation rules
(available -> installing -> active, one active per tenant and region, 24 h), apply and revert with
real DEK rewraps, and BYOK environments created directly on the active key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from control_support import audit_rows, snapshot
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from keyshift.clock import FixedClock
from keyshift.control import byok, environments, tenants
from keyshift.db.models import Dek, DekWrap, Environment
from keyshift.errors import AlreadyExistsError, ConflictError, NotFoundError, UsageError
from keyshift.runtime import Runtime

PW = "correct horse"
_POOL: list[rsa.RSAPrivateKey] = []


def _rsa(i: int = 0) -> rsa.RSAPrivateKey:
    """The i-th RSA-2048 test key (generated once per session: key generation is the slow part)."""
    while len(_POOL) <= i:
        _POOL.append(rsa.generate_private_key(65537, 2048))
    return _POOL[i]


def _pfx(
    tmp_path: Path, name: str, key: object, password: bytes | None = PW.encode(), cert: object = None
) -> Path:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    data = pkcs12.serialize_key_and_certificates(b"k", key, cert, None, enc)  # type: ignore[arg-type]
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture
def fab(ctl: Runtime) -> Runtime:
    tenants.create_tenant(ctl, "fab", byok=True)
    return ctl


def test_generate_writes_a_0600_pkcs12_that_holds_the_imported_key(fab: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "k1.pfx"
    v = byok.generate(fab, "fab", "k1", out=out, password=PW)
    assert v["state"] == "available" and v["source"] == "generated" and v["region"] == "eu"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    key, cert, _ = pkcs12.load_key_and_certificates(out.read_bytes(), PW.encode())
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048 and cert is not None
    # The vault holds the same key: its public key matches the file's.
    with fab.transaction() as s:
        t = s.query(__import__("keyshift.db.models", fromlist=["Tenant"]).Tenant).filter_by(name="fab").one()
        from keyshift.db.models import ByokKey

        row = s.query(ByokKey).filter_by(name="k1").one()
        vault_id, vault_key = t.byok_vault_id, row.vault_key_name
    pem = fab.vault(vault_id).public_key_pem(vault_key)  # type: ignore[attr-defined]
    assert pem == key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert [k["name"] for k in byok.list_keys(fab, "fab")] == ["k1"]
    assert tenants.show_tenant(fab, "fab")["byok_keys"][0]["name"] == "k1"


def test_generate_refuses_existing_file_and_changes_nothing(fab: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "exists.pfx"
    out.write_bytes(b"keep me")
    before = snapshot(fab)
    with pytest.raises(UsageError) as info:
        byok.generate(fab, "fab", "k1", out=out, password=PW)
    assert info.value.code == "file_exists" and out.read_bytes() == b"keep me"
    assert snapshot(fab) == before


def test_import_then_generated_file_round_trips(fab: Runtime, tmp_path: Path) -> None:
    key = _rsa()
    v = byok.import_key(fab, "fab", "imp", file=_pfx(tmp_path, "a.pfx", key), password=PW, region="us")
    assert (v["state"], v["source"], v["region"]) == ("available", "imported", "us")


def test_import_bad_files_have_clear_errors_and_change_nothing(fab: Runtime, tmp_path: Path) -> None:
    good = _rsa()
    cases = {
        "wrong_password": (_pfx(tmp_path, "wp.pfx", good), "not the password"),
        "not_pkcs12": (tmp_path / "junk.pfx", PW),
        "wrong_key_size": (_pfx(tmp_path, "small.pfx", rsa.generate_private_key(65537, 1024)), PW),  # noqa: S505
        "wrong_key_type": (_pfx(tmp_path, "ec.pfx", ec.generate_private_key(ec.SECP256R1())), PW),
        "file_not_found": (tmp_path / "missing.pfx", PW),
        "password_required": (_pfx(tmp_path, "np.pfx", good), ""),
    }
    (tmp_path / "junk.pfx").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot really\n")
    _key, cert_only, _ = pkcs12.load_key_and_certificates(_gen_cert_pfx(), PW.encode())
    cases["no_private_key"] = (_pfx(tmp_path, "nokey.pfx", None, cert=cert_only), PW)
    before = snapshot(fab)
    for code, (path, pw) in cases.items():
        with pytest.raises(UsageError) as info:
            byok.import_key(fab, "fab", "k", file=path, password=pw)
        assert info.value.code == code, (code, info.value.code, info.value.message)
        assert pw not in info.value.message or not pw
        assert info.value.exit_code == 2
    assert snapshot(fab) == before
    fails = [e for e in audit_rows(fab, "byok.key.import") if e.outcome == "error"]
    assert len(fails) == len(cases)


def _gen_cert_pfx() -> bytes:
    from keyshift.clock import SystemClock
    from keyshift.control.pkcs12_files import to_pkcs12

    return to_pkcs12(_rsa(1), "x", PW.encode(), SystemClock().now())


KEY_BAD_INPUT = (
    (
        None,
        lambda rt, p: byok.import_key(rt, "plain", "k", file=p, password=PW),
        ConflictError,
        "byok_feature_off",
    ),
    (
        None,
        lambda rt, p: byok.import_key(rt, "ghost", "k", file=p, password=PW),
        NotFoundError,
        "tenant_not_found",
    ),
    (
        None,
        lambda rt, p: byok.import_key(rt, "fab", "k", file=p, password=PW, region="mars"),
        UsageError,
        "invalid_region",
    ),
    (
        None,
        lambda rt, p: byok.import_key(rt, "fab", "bad name", file=p, password=PW),
        UsageError,
        "invalid_name",
    ),
    (
        "k",
        lambda rt, p: byok.import_key(rt, "fab", "k", file=p, password=PW),
        AlreadyExistsError,
        "key_exists",
    ),
    (
        "k",
        lambda rt, p: byok.import_key(rt, "fab", "k2", file=p, password=PW),
        AlreadyExistsError,
        "duplicate_key",
    ),
    (
        None,
        lambda rt, p: byok.generate(rt, "fab", "k", out=p.with_suffix(".new"), password="short"),
        UsageError,
        "weak_password",
    ),
    (None, lambda rt, p: byok.activate(rt, "fab", "ghost"), NotFoundError, "byok_key_not_found"),
)


def test_key_bad_input_changes_nothing(fab: Runtime, tmp_path: Path) -> None:
    tenants.create_tenant(fab, "plain")
    path = _pfx(tmp_path, "k.pfx", _rsa())
    for setup, call, err, code in KEY_BAD_INPUT:
        if setup == "k" and not byok.list_keys(fab, "fab"):
            byok.import_key(fab, "fab", setup, file=path, password=PW)
        before = snapshot(fab)
        with pytest.raises(err) as info:
            call(fab, path)
        assert info.value.code == code
        assert snapshot(fab) == before
        assert not path.with_suffix(".new").exists()


def _two_keys(rt: Runtime, tmp_path: Path) -> None:
    for i, n in enumerate(("k1", "k2")):
        byok.import_key(rt, "fab", n, file=_pfx(tmp_path, f"{n}.pfx", _rsa(i)), password=PW)


def test_activation_states_one_active_per_region_and_24h(
    fab: Runtime, tmp_path: Path, clock: FixedClock
) -> None:
    _two_keys(fab, tmp_path)
    v = byok.activate(fab, "fab", "k1")
    assert v["state"] == "active" and v["activated_at"] == clock.now().isoformat().replace("+00:00", "Z")
    before = snapshot(fab)
    with pytest.raises(ConflictError) as info:
        byok.activate(fab, "fab", "k2")
    assert info.value.code == "activation_too_soon" and snapshot(fab) == before
    with pytest.raises(ConflictError) as info:
        byok.activate(fab, "fab", "k1")
    assert info.value.code == "already_active"
    clock.advance(hours=24)
    assert byok.activate(fab, "fab", "k2")["state"] == "active"
    states = {k["name"]: k["state"] for k in byok.list_keys(fab, "fab")}
    assert states == {"k1": "available", "k2": "active"}
    acts = [e.action for e in audit_rows(fab) if e.action.startswith("byok.key.") and e.outcome == "ok"]
    assert acts.count("byok.key.install") == 2 and acts.count("byok.key.activate") == 2
    assert tenants.show_tenant(fab, "fab")["last_key_change_at"] == clock.now().isoformat().replace(
        "+00:00", "Z"
    )


def test_activation_in_another_region_is_independent(fab: Runtime, tmp_path: Path) -> None:
    byok.import_key(fab, "fab", "eu1", file=_pfx(tmp_path, "a.pfx", _rsa(0)), password=PW)
    byok.import_key(fab, "fab", "us1", file=_pfx(tmp_path, "b.pfx", _rsa(1)), password=PW, region="us")
    byok.activate(fab, "fab", "eu1")
    assert byok.activate(fab, "fab", "us1")["state"] == "active"


def test_crashed_installing_key_blocks_others_only_for_a_while(
    fab: Runtime, tmp_path: Path, clock: FixedClock
) -> None:
    _two_keys(fab, tmp_path)
    from keyshift.db.models import ByokKey

    with fab.transaction() as s:  # as a crashed `byok key activate` leaves it
        k = s.query(ByokKey).filter_by(name="k1").one()
        k.state, k.state_changed_at = "installing", clock.now()
    with pytest.raises(ConflictError) as info:
        byok.activate(fab, "fab", "k2")
    assert info.value.code == "activation_in_progress"
    clock.advance(minutes=16)
    assert byok.activate(fab, "fab", "k2")["state"] == "active"
    assert {k["name"]: k["state"] for k in byok.list_keys(fab, "fab")}["k1"] == "available"


def test_activation_fails_cleanly_when_the_vault_key_is_unusable(fab: Runtime, tmp_path: Path) -> None:
    _two_keys(fab, tmp_path)
    from keyshift.db.models import ByokKey, Tenant

    with fab.transaction() as s:
        vault_id = s.query(Tenant).filter_by(name="fab").one().byok_vault_id
        vkey = s.query(ByokKey).filter_by(name="k1").one().vault_key_name
    fab.vault(vault_id).set_enabled(vkey, False)  # type: ignore[attr-defined]
    with pytest.raises(Exception) as info:
        byok.activate(fab, "fab", "k1")
    assert getattr(info.value, "code", "") == "key_disabled"
    assert {k["name"]: k["state"] for k in byok.list_keys(fab, "fab")}["k1"] == "available"


def _env_with_data(rt: Runtime, name: str, env_type: str = "sandbox") -> None:
    environments.create_environment(rt, "fab", name, env_type=env_type)
    from keyshift.stores.records import RecordStore

    store = RecordStore(rt, environments.show_environment(rt, name)["id"])
    for i in range(5):
        store.put("accounts", f"a{i}", {"n": i})


def _records(rt: Runtime, name: str) -> list[object]:
    from keyshift.stores.records import RecordStore

    rt.forget_vault()
    store = RecordStore(rt, environments.show_environment(rt, name)["id"])
    return [store.get("accounts", f"a{i}") for i in range(5)]


def _current_wraps(rt: Runtime, env_name: str) -> set[tuple[str, str]]:
    with rt.transaction() as s:
        env = s.query(Environment).filter_by(name=env_name).one()
        rows = (
            s.query(DekWrap.vault_id, DekWrap.key_name)
            .join(Dek, Dek.id == DekWrap.dek_id)
            .filter(Dek.environment_id == env.id, DekWrap.state == "current")
            .all()
        )
        return {(a, b) for a, b in rows}


def test_apply_rewraps_under_the_active_key_and_revert_returns_to_platform(
    fab: Runtime, tmp_path: Path
) -> None:
    _env_with_data(fab, "fab-prod", "production")
    _two_keys(fab, tmp_path)
    before = snapshot(fab)
    with pytest.raises(ConflictError) as info:
        byok.apply(fab, "fab-prod")
    assert info.value.code == "no_active_key" and snapshot(fab) == before
    byok.activate(fab, "fab", "k1")
    v = byok.apply(fab, "fab-prod")
    enc = v["encryption"]
    assert (enc["mode"], enc["managed_by"], enc["key"]["byok_key"]["name"]) == ("byok", "customer", "k1")
    assert enc["key"]["vault"]["name"] == "byok-fab"
    wraps = _current_wraps(fab, "fab-prod")
    assert wraps and all(k.startswith("k1-") for _, k in wraps)
    assert _records(fab, "fab-prod") == [{"n": i} for i in range(5)]
    with pytest.raises(ConflictError) as info:
        byok.apply(fab, "fab-prod")
    assert info.value.code == "already_applied"
    # Production revert needs the typed confirmation.
    for confirm, code in ((None, "confirmation_required"), ("fab-pro", "confirmation_mismatch")):
        before = snapshot(fab)
        with pytest.raises(UsageError) as uinfo:
            byok.revert(fab, "fab-prod", confirm=confirm)
        assert uinfo.value.code == code and snapshot(fab) == before
    v = byok.revert(fab, "fab-prod", confirm="fab-prod")
    assert (v["encryption"]["mode"], v["encryption"]["managed_by"]) == ("platform", "platform")
    assert {k for _, k in _current_wraps(fab, "fab-prod")} == {fab.settings.platform_key}
    assert _records(fab, "fab-prod") == [{"n": i} for i in range(5)]
    acts = [(e.action, e.outcome) for e in audit_rows(fab) if e.action in ("byok.apply", "byok.revert")]
    assert acts.count(("byok.apply", "ok")) == 1 and acts.count(("byok.revert", "ok")) == 1
    assert ("byok.revert", "error") in acts and ("byok.apply", "error") in acts


def test_sandbox_revert_needs_no_confirmation_and_non_byok_revert_is_refused(
    fab: Runtime, tmp_path: Path
) -> None:
    environments.create_environment(fab, "fab", "sb")
    with pytest.raises(ConflictError) as info:
        byok.revert(fab, "sb")
    assert info.value.code == "not_byok"
    _two_keys(fab, tmp_path)
    byok.activate(fab, "fab", "k1")
    byok.apply(fab, "sb")
    assert byok.revert(fab, "sb")["encryption"]["mode"] == "platform"


def test_apply_refusals(fab: Runtime, tmp_path: Path) -> None:
    tenants.create_tenant(fab, "plain")
    environments.create_environment(fab, "plain", "p1")
    environments.create_environment(fab, "fab", "migrated")
    _two_keys(fab, tmp_path)
    byok.activate(fab, "fab", "k1")
    with fab.transaction() as s:
        env = s.query(Environment).filter_by(name="migrated").one()
        env.migrated_from_byok_at = fab.clock.now()
    before = snapshot(fab)
    for env, code in (("p1", "byok_feature_off"), ("migrated", "migrated_from_byok")):
        with pytest.raises(ConflictError) as info:
            byok.apply(fab, env)
        assert info.value.code == code
    with pytest.raises(NotFoundError):
        byok.apply(fab, "ghost")
    assert snapshot(fab) == before


def test_env_create_byok_uses_the_active_key_or_refuses_with_nothing_created(
    fab: Runtime, tmp_path: Path
) -> None:
    before = snapshot(fab)
    with pytest.raises(ConflictError) as info:
        environments.create_environment(fab, "fab", "b1", byok=True)
    assert info.value.code == "no_active_key" and snapshot(fab) == before
    _two_keys(fab, tmp_path)
    byok.activate(fab, "fab", "k2")
    v = environments.create_environment(fab, "fab", "b1", byok=True)
    assert v["encryption"]["mode"] == "byok" and v["encryption"]["key"]["byok_key"]["name"] == "k2"
    assert v["stores"] == {"records": "sql", "audit": "sql", "files": "sql"}
    from keyshift.stores.records import RecordStore

    RecordStore(fab, v["id"]).put("t", "1", {"x": 1})
    assert {k for _, k in _current_wraps(fab, "b1")} == {_vault_key(fab, "k2")}


def _vault_key(rt: Runtime, name: str) -> str:
    from keyshift.db.models import ByokKey

    with rt.transaction() as s:
        return s.query(ByokKey).filter_by(name=name).one().vault_key_name


def test_no_key_material_or_password_reaches_the_database(fab: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "k.pfx"
    byok.generate(fab, "fab", "k1", out=out, password="pw-never-stored-42")
    key, _, _ = pkcs12.load_key_and_certificates(out.read_bytes(), b"pw-never-stored-42")
    assert isinstance(key, rsa.RSAPrivateKey)
    nums = key.private_numbers()
    secrets_ = [
        nums.d.to_bytes((nums.d.bit_length() + 7) // 8, "big"),
        nums.p.to_bytes((nums.p.bit_length() + 7) // 8, "big"),
        key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    ]
    from sqlalchemy import inspect, text

    with fab.engine.connect() as conn:
        blob = b""
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for col in row:
                    blob += col if isinstance(col, bytes) else str(col).encode()
    assert b"pw-never-stored-42" not in blob
    for secret in secrets_:
        assert secret not in blob and secret.hex().encode() not in blob
