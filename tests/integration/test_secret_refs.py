"""Secret references and external-vault config validation (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyshift.errors import UsageError
from keyshift.vaults.external import canonical_context, check_dek, validate_config
from keyshift.vaults.secrets import SecretRef, SecretUnavailableError


def test_env_reference_reads_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = SecretRef(env="KS_T_SECRET")
    assert ref.to_config() == {"env": "KS_T_SECRET"}
    monkeypatch.delenv("KS_T_SECRET", raising=False)
    with pytest.raises(SecretUnavailableError) as err:
        ref.read()
    assert err.value.exit_code == 6 and "KS_T_SECRET" in err.value.message
    monkeypatch.setenv("KS_T_SECRET", "s3cr3t-value")
    assert ref.read() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(ref) + ref.describe()


def test_file_reference_checks(tmp_path: Path) -> None:
    f = tmp_path / "pin"
    f.write_text("1234\n")
    f.chmod(0o600)
    assert SecretRef(file=str(f)).read() == "1234"
    f.chmod(0o604)
    with pytest.raises(SecretUnavailableError, match="readable by other users"):
        SecretRef(file=str(f)).read()
    f.chmod(0o600)
    f.write_text("")
    with pytest.raises(SecretUnavailableError, match="empty"):
        SecretRef(file=str(f)).read()
    with pytest.raises(SecretUnavailableError):
        SecretRef(file=str(tmp_path / "missing")).read()
    with pytest.raises(SecretUnavailableError, match="not a regular file"):
        SecretRef(file=str(tmp_path)).read()
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    big.chmod(0o600)
    with pytest.raises(SecretUnavailableError, match="larger"):
        SecretRef(file=str(big)).read()


@pytest.mark.parametrize(
    "build",
    [
        lambda: SecretRef(),
        lambda: SecretRef(env="A", file="/x"),
        lambda: SecretRef(env="1BAD"),
        lambda: SecretRef(env="HAS SPACE"),
        lambda: SecretRef(file="relative/path"),
        lambda: SecretRef.from_config("1234", what="PIN"),
        lambda: SecretRef.from_config({"value": "1234"}, what="PIN"),
        lambda: SecretRef.from_options(env=None, file=None, what="PIN"),
        lambda: SecretRef.from_options(env="A", file="/x", what="PIN"),
    ],
)
def test_malformed_references_are_usage_errors(build: object) -> None:
    with pytest.raises(UsageError):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("pkcs11", {"module": "relative.so", "token_label": "t", "pin": {"env": "P"}}),
        ("pkcs11", {"module": "/m.so", "token_label": "", "pin": {"env": "P"}}),
        ("pkcs11", {"module": "/m.so", "token_label": "t", "pin": "1234"}),
        ("pkcs11", {"module": "/m.so", "token_label": "t", "pin": {"env": "P"}, "so_pin": "1"}),
        ("kmip", {"host": "h", "port": 0, "cert": "/c", "key": "/k", "ca": "/a"}),
        ("kmip", {"host": "h", "port": True, "cert": "/c", "key": "/k", "ca": "/a"}),
        ("kmip", {"host": "h", "port": 5696, "cert": "c.pem", "key": "/k", "ca": "/a"}),
        ("kmip", {"host": "", "port": 5696, "cert": "/c", "key": "/k", "ca": "/a"}),
        ("aws-kms", {"region": "not a region"}),
        ("aws-kms", {"region": "eu-west-1", "endpoint_url": "ftp://x"}),
        ("aws-kms", {"region": "eu-west-1", "secret_access_key": "abc"}),
        ("hsm", {}),
    ],
)
def test_bad_provider_config_is_refused(kind: str, raw: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        validate_config(kind, raw)


def test_good_configs_round_trip() -> None:
    assert validate_config("pkcs11", {"module": "/m.so", "token_label": "t", "pin": {"file": "/p"}})[
        "pin"
    ] == {"file": "/p"}
    assert (
        validate_config("kmip", {"host": "h", "port": 5696, "cert": "/c", "key": "/k", "ca": "/a"})["timeout"]
        == 10.0
    )
    assert validate_config("aws-kms", {"region": "eu-west-1"}) == {
        "endpoint_url": None,
        "region": "eu-west-1",
    }


def test_dek_and_context_checks() -> None:
    assert check_dek(b"k" * 32) == b"k" * 32
    for bad in (b"", b"k" * 15, b"k" * 65, "k" * 32):
        with pytest.raises(UsageError):
            check_dek(bad)  # type: ignore[arg-type]
    assert canonical_context({"b": "2", "a": "1"}) == canonical_context({"a": "1", "b": "2"})
    assert canonical_context(None) == canonical_context({}) == b"{}"
    with pytest.raises(UsageError):
        canonical_context({"a": 1})  # type: ignore[dict-item]
