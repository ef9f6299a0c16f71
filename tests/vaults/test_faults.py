"""Fault injection around real providers (FaultyVault is a FAKE wrapper; the vaults inside are real):
retries of retryable errors, typed errors surfacing at once, determinism, and that nothing is
returned or stored under a key the vault could not confirm."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from keyshift.errors import VaultUnavailableError
from keyshift.runtime import Runtime
from keyshift.vaults.base import (
    KeyDisabledError,
    KeyRef,
    KeyType,
    KeyVault,
    ThrottledError,
    WrappedKey,
    with_retries,
)
from keyshift.vaults.faults import FaultyVault
from servers import aws_test_env, kmip_server, moto_endpoint, softhsm_token  # noqa: F401 - fixtures

WHO = "policy-identity-1"


@dataclass
class Provider:
    vault: KeyVault
    make_key: Callable[[], KeyRef]
    identity: str
    disable: Callable[[KeyRef], None]


def _local(request: pytest.FixtureRequest) -> Provider:
    from local_support import IDENTITY, new_key, new_vault

    rt: Runtime = request.getfixturevalue("sqlite_rt")
    v = new_vault(rt)
    return Provider(v, lambda: new_key(v), IDENTITY, lambda ref: v.set_enabled(ref.name, False))


def _pkcs11(request: pytest.FixtureRequest) -> Provider:
    from keyshift.vaults.pkcs11 import Pkcs11Vault

    tok = request.getfixturevalue("softhsm_token")
    os.environ["KS_TEST_HSM_PIN"] = tok.pin
    v = Pkcs11Vault(
        "hsm", {"module": tok.module, "token_label": tok.label, "pin": {"env": "KS_TEST_HSM_PIN"}}
    )
    return Provider(v, lambda: _create(v), WHO, lambda ref: v.set_enabled(ref.name, False))


def _kmip(request: pytest.FixtureRequest) -> Provider:
    from keyshift.vaults.kmip import KmipVault

    srv = request.getfixturevalue("kmip_server")
    v = KmipVault(
        "kmip1",
        {
            "host": srv.host,
            "port": srv.port,
            "cert": str(srv.pki.client_cert),
            "key": str(srv.pki.client_key),
            "ca": str(srv.pki.ca),
        },
    )
    return Provider(v, lambda: _create(v), WHO, lambda ref: v.set_enabled(ref.name, False))


def _aws(request: pytest.FixtureRequest) -> Provider:
    from keyshift.vaults.aws_kms import AwsKmsVault

    request.getfixturevalue("aws_test_env")
    url = request.getfixturevalue("moto_endpoint")
    v = AwsKmsVault("kms1", {"endpoint_url": url, "region": "us-east-1"})
    return Provider(v, lambda: _create(v), WHO, lambda ref: v.set_enabled(ref.name, False))


def _create(v: Any) -> KeyRef:
    name = f"f-{secrets.token_hex(4)}"
    v.create_key(name, KeyType.AES, 256)
    return KeyRef(v.name, name)


@pytest.fixture(params=["local", "pkcs11", "kmip", "aws-kms"])
def provider(request: pytest.FixtureRequest) -> Provider:
    return {"local": _local, "pkcs11": _pkcs11, "kmip": _kmip, "aws-kms": _aws}[request.param](request)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def test_outage_then_back_up_is_retried(provider: Provider, sleeps: list[float]) -> None:
    ref = provider.make_key()
    fv = FaultyVault(provider.vault, outages=[(1, 2)], sleep=sleeps.append)
    dek = os.urandom(32)
    wrapped = with_retries(lambda: fv.wrap(ref, dek, identity=provider.identity), sleep=sleeps.append)
    assert fv.calls["wrap"] == 3 and fv.inner_calls["wrap"] == 1 and fv.injected["outage"] == 2
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9  # backoff between the attempts
    assert fv.unwrap(wrapped, identity=provider.identity) == dek


def test_persistent_throttling_surfaces_as_retryable_error_after_the_attempts(
    provider: Provider, sleeps: list[float]
) -> None:
    ref = provider.make_key()
    fv = FaultyVault(provider.vault, throttle_rate=1.0, sleep=sleeps.append)
    result: list[WrappedKey] = []
    with pytest.raises(ThrottledError) as err:
        result.append(
            with_retries(
                lambda: fv.wrap(ref, b"k" * 32, identity=provider.identity), attempts=5, sleep=sleeps.append
            )
        )
    assert err.value.retryable and not result
    assert fv.calls["wrap"] == 5 and fv.inner_calls["wrap"] == 0


def test_typed_refusal_is_not_retried(provider: Provider, sleeps: list[float]) -> None:
    ref = provider.make_key()
    wrapped = provider.vault.wrap(ref, b"k" * 32, identity=provider.identity)
    provider.disable(ref)
    fv = FaultyVault(provider.vault, sleep=sleeps.append)
    with pytest.raises(KeyDisabledError):
        with_retries(lambda: fv.unwrap(wrapped, identity=provider.identity), sleep=sleeps.append)
    assert fv.calls["unwrap"] == 1 and sleeps == []


def test_lost_reply_returns_nothing(provider: Provider, sleeps: list[float]) -> None:
    """The vault wrapped the DEK but the answer never came back: the caller holds no wrapped key."""
    ref = provider.make_key()
    fv = FaultyVault(provider.vault, lost_reply_rate=1.0, timeout_seconds=2.5, sleep=sleeps.append)
    got: list[WrappedKey] = []
    with pytest.raises(VaultUnavailableError):
        got.append(
            with_retries(lambda: fv.wrap(ref, b"k" * 32, identity=provider.identity), sleep=sleeps.append)
        )
    assert got == []
    assert fv.inner_calls["wrap"] == 4 and fv.injected["lost_reply"] == 4  # work done, never confirmed
    assert sleeps.count(2.5) == 4  # each attempt waited out its timeout


def test_seeded_faults_are_reproducible_and_never_corrupt(provider: Provider) -> None:
    ref = provider.make_key()

    def run(seed: int) -> tuple[list[str], dict[str, int]]:
        fv = FaultyVault(
            provider.vault,
            seed=seed,
            error_rate=0.2,
            throttle_rate=0.2,
            timeout_rate=0.1,
            sleep=lambda s: None,
        )
        trace: list[str] = []
        for i in range(8):
            dek = bytes([i]) * 32
            try:
                w = with_retries(
                    lambda d=dek: fv.wrap(ref, d, identity=provider.identity),
                    attempts=6,
                    sleep=lambda s: None,
                )
                assert (
                    with_retries(
                        lambda w=w: fv.unwrap(w, identity=provider.identity), attempts=6, sleep=lambda s: None
                    )
                    == dek
                )
                trace.append("ok")
            except VaultUnavailableError as exc:
                trace.append(exc.code)
        return trace, dict(fv.injected)

    first, second, other = run(7), run(7), run(8)
    assert first == second
    assert sum(first[1].values()) > 0
    assert first != other or first[1] != other[1]


# -- the data plane: no data under a key the vault did not confirm ---------------------------------


@pytest.fixture
def platform_env(sqlite_rt: Runtime) -> Iterator[tuple[Runtime, str, str]]:
    from keyshift.control import environments, tenants

    tenants.create_tenant(sqlite_rt, "faulty-t")
    env = environments.create_environment(sqlite_rt, "faulty-t", "faulty-env")
    with sqlite_rt.transaction() as s:
        from keyshift.db.models import Environment

        row = s.get(Environment, env["id"])
        assert row is not None and row.kek_vault_id
        vault_id = row.kek_vault_id
    yield sqlite_rt, str(env["id"]), vault_id


def test_unconfirmed_wrap_writes_nothing_then_recovers(platform_env: tuple[Runtime, str, str]) -> None:
    from sqlalchemy import func, select

    from keyshift.db.models import Dek, DekWrap
    from keyshift.errors import NotFoundError
    from keyshift.stores.records import RecordStore

    rt, env_id, vault_id = platform_env
    fv = FaultyVault(rt.vault(vault_id), lost_reply_rate=1.0, sleep=lambda s: None)
    rt._vaults[vault_id] = fv  # the data plane resolves vaults by id through this cache

    def counts() -> tuple[int, int]:
        with rt.transaction() as s:
            deks = s.scalar(select(func.count()).select_from(Dek).where(Dek.environment_id == env_id))
            wraps = s.scalar(
                select(func.count()).select_from(DekWrap).join(Dek).where(Dek.environment_id == env_id)
            )
            return int(deks or 0), int(wraps or 0)

    store = RecordStore(rt, env_id)
    with pytest.raises(VaultUnavailableError):
        store.put("t", "a1", {"secret": "value"})
    assert fv.inner_calls["wrap"] >= 1  # the vault did wrap — and we never got the answer
    assert counts() == (0, 0)
    with pytest.raises(NotFoundError):
        store.get("t", "a1")
    # The vault comes back: the write goes through under exactly one confirmed DEK.
    fv.lost_reply_rate = 0.0
    store.put("t", "a1", {"secret": "value"})
    assert store.get("t", "a1") == {"secret": "value"}
    assert counts() == (1, 1)
