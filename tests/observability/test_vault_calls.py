"""Vault call metrics: counted where the registry hands out adapters, by kind, operation and
outcome class — ok, refused (the vault said no), unreachable, local (failed on our side)."""

from __future__ import annotations

import secrets

import pytest

from keyshift.control.vaults import create_key, create_local_vault, grant_key
from keyshift.errors import InternalError, KeyInaccessibleError, UsageError, VaultUnavailableError
from keyshift.observability import metrics
from keyshift.observability.exposition import render
from keyshift.observability.vault_calls import instrument, outcome_of
from keyshift.runtime import Runtime
from keyshift.vaults.base import (
    AccessDeniedError,
    KeyDisabledError,
    KeyNotFoundError,
    KeyRef,
    ThrottledError,
    UnwrapError,
    VaultLocalError,
)
from keyshift.vaults.faults import FaultyVault
from keyshift.vaults.local import LocalVault

from .support import parse, value


def _count(kind: str, operation: str, outcome: str) -> float:
    return value(
        parse(render().decode()),
        "keyshift_vault_calls_total",
        kind=kind,
        operation=operation,
        outcome=outcome,
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (VaultUnavailableError("down"), "unreachable"),
        (ThrottledError("slow down"), "unreachable"),
        (AccessDeniedError("no grant"), "refused"),
        (KeyDisabledError("disabled"), "refused"),
        (KeyNotFoundError("gone"), "refused"),
        (KeyInaccessibleError("no"), "refused"),
        # The vault's answer about that ciphertext (an integrity failure, not a revocation).
        (UnwrapError("tampered"), "refused"),
        # A missing client library is this process's problem, never the key owner's.
        (VaultLocalError("no client", code="vault_client_missing"), "local"),
        (UsageError("bad ref"), "local"),
        (ValueError("bug"), "local"),
    ],
)
def test_outcome_class_from_todays_error_classes(error: Exception, expected: str) -> None:
    assert outcome_of(error) == expected


def test_an_outcome_attribute_on_the_error_decides_first() -> None:
    err = VaultUnavailableError("tls handshake failed locally")
    err.outcome = "local"  # type: ignore[attr-defined]
    assert outcome_of(err) == "local"
    odd = AccessDeniedError("x")
    odd.outcome = "sideways"  # type: ignore[attr-defined]  # not a class we know: the fallback
    assert outcome_of(odd) == "refused"
    internal = InternalError("x")
    internal.outcome = "refused"  # type: ignore[attr-defined]
    assert outcome_of(internal) == "refused"


def test_adapters_from_the_runtime_are_counted_and_keep_their_class(sqlite_rt: Runtime) -> None:
    rt = sqlite_rt
    create_local_vault(rt, "kv", soft_delete_days=7, purge_protection=True)
    create_key(rt, "kv", "k", "AES", 256)
    grant_key(rt, "kv", "k", "app", "get,wrapKey,unwrapKey")
    vault = rt.vault("kv")
    assert isinstance(vault, LocalVault)  # instrumenting does not hide the adapter's class
    ok0, refused0 = _count("local", "wrap", "ok"), _count("local", "wrap", "refused")
    unwrap0 = _count("local", "unwrap", "ok")
    wrapped = vault.wrap(KeyRef("kv", "k"), secrets.token_bytes(32), identity="app")
    vault.unwrap(wrapped, identity="app")
    with pytest.raises(AccessDeniedError):
        vault.wrap(KeyRef("kv", "k"), secrets.token_bytes(32), identity="stranger")
    assert _count("local", "wrap", "ok") - ok0 == 1
    assert _count("local", "wrap", "refused") - refused0 == 1
    assert _count("local", "unwrap", "ok") - unwrap0 == 1
    instrument(vault)  # idempotent: still one count per call
    vault.unwrap(wrapped, identity="app")
    assert _count("local", "unwrap", "ok") - unwrap0 == 2


def test_an_unreachable_vault_is_counted_as_unreachable(sqlite_rt: Runtime) -> None:
    """FaultyVault is a FAKE outage around the real local adapter."""
    rt = sqlite_rt
    create_local_vault(rt, "kv", soft_delete_days=7, purge_protection=True)
    create_key(rt, "kv", "k", "AES", 256)
    fake = FaultyVault(rt.vault("kv"))
    fake.kind = "local"
    instrument(fake)
    fake.go_down()
    before = _count("local", "describe", "unreachable")
    with pytest.raises(VaultUnavailableError):
        fake.describe(KeyRef("kv", "k"))
    assert _count("local", "describe", "unreachable") - before == 1
    seconds = parse(render().decode())
    assert (
        value(
            seconds,
            "keyshift_vault_call_seconds_count",
            kind="local",
            operation="describe",
            outcome="unreachable",
        )
        >= 1
    )
    assert metrics.VAULT_OUTCOMES == ("ok", "refused", "unreachable", "local")
