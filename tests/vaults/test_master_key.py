"""The home's master key: 0600 file created exclusively, passphrase mode, and clear errors for a
world-readable file, a wrong key or passphrase, a missing key, and tampered parameters."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from local_support import new_key, new_vault

from keyshift.bootstrap import init_home
from keyshift.clock import FixedClock
from keyshift.errors import ConflictError
from keyshift.runtime import Runtime
from keyshift.vaults import master_key
from keyshift.vaults.base import KeyRef
from keyshift.vaults.master_key import PASSPHRASE_ENV, MasterKeyError

DEK = os.urandom(32)


@pytest.fixture(autouse=True)
def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


def _use_platform_key(home: Path, clock: FixedClock) -> bytes:
    with Runtime.open(home=home, clock=clock) as rt:
        s = rt.settings
        vault = rt.vault(s.platform_vault)
        ref = KeyRef(s.platform_vault, s.platform_key)
        return vault.unwrap(vault.wrap(ref, DEK, identity=s.platform_identity), identity=s.platform_identity)


def test_master_key_file_is_0600_from_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real_open = os.open

    def spy(path: object, flags: int, mode: int = 0o777, *a: object, **k: object) -> int:
        if str(path).endswith(master_key.MASTER_KEY_FILE):
            calls.append((flags, mode))
        return real_open(path, flags, mode, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(master_key.os, "open", spy)
    old = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        result = init_home(tmp_path / "h")
    finally:
        os.umask(old)
    assert result["master_key"] == {"created": True, "kind": "file"}
    create = [(f, m) for f, m in calls if f & os.O_CREAT]
    assert create and all(f & os.O_EXCL and m == 0o600 for f, m in create)
    f = tmp_path / "h" / master_key.MASTER_KEY_FILE
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert len(f.read_bytes()) == 32
    key = f.read_bytes()
    again = init_home(tmp_path / "h")
    assert again["master_key"] == {"created": False, "kind": "file"}
    assert f.read_bytes() == key
    assert "check" in json.loads((tmp_path / "h" / master_key.MASTER_META_FILE).read_text())


def test_master_key_with_group_or_other_bits_is_refused(tmp_path: Path, clock: FixedClock) -> None:
    home = tmp_path / "h"
    init_home(home)
    for mode in (0o644, 0o640, 0o604, 0o660, 0o601):
        (home / master_key.MASTER_KEY_FILE).chmod(mode)
        with pytest.raises(ConflictError) as err:
            _use_platform_key(home, clock)
        assert err.value.code == "master_key_insecure" and "chmod 600" in err.value.message
    (home / master_key.MASTER_KEY_FILE).chmod(0o600)
    assert _use_platform_key(home, clock) == DEK


def test_wrong_master_key_is_a_clear_error_not_garbage(tmp_path: Path, clock: FixedClock) -> None:
    home = tmp_path / "h"
    init_home(home)
    f = home / master_key.MASTER_KEY_FILE
    original = f.read_bytes()
    f.write_bytes(os.urandom(32))
    with pytest.raises(MasterKeyError) as err:
        _use_platform_key(home, clock)
    assert err.value.exit_code == 6 and "wrong master key" in err.value.message
    # Without the key-check file, the sealed material itself refuses to open (AES-GCM tag).
    (home / master_key.MASTER_META_FILE).unlink()
    with pytest.raises(MasterKeyError):
        _use_platform_key(home, clock)
    f.write_bytes(original)
    assert _use_platform_key(home, clock) == DEK
    f.write_bytes(original[:31])
    with pytest.raises(ConflictError) as short:
        _use_platform_key(home, clock)
    assert short.value.code == "master_key_corrupt"


def test_passphrase_master_key(tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "h"
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    result = init_home(home)
    assert result["master_key"] == {"created": True, "kind": "scrypt"}
    assert not (home / master_key.MASTER_KEY_FILE).exists()
    meta = json.loads((home / master_key.MASTER_META_FILE).read_text())
    assert meta["kind"] == "scrypt" and meta["n"] >= 2**14 and "correct" not in json.dumps(meta)
    assert _use_platform_key(home, clock) == DEK
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong passphrase")
    with pytest.raises(MasterKeyError):
        _use_platform_key(home, clock)
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(ConflictError) as missing:
        _use_platform_key(home, clock)
    assert missing.value.code == "master_passphrase_required"
    # Tampered cost parameters are refused before any derivation.
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    for bad in ({"n": 2**30}, {"n": 2**20, "r": 16}, {"n": 1000}, {"salt": ""}, {"p": 0}):
        (home / master_key.MASTER_META_FILE).write_text(json.dumps({**meta, **bad}))
        with pytest.raises(ConflictError) as corrupt:
            _use_platform_key(home, clock)
        assert corrupt.value.code == "master_key_corrupt", bad
    (home / master_key.MASTER_META_FILE).write_text(json.dumps(meta))
    assert _use_platform_key(home, clock) == DEK


def test_init_refuses_to_replace_a_lost_master_key(tmp_path: Path, clock: FixedClock) -> None:
    home = tmp_path / "h"
    init_home(home)
    with Runtime.open(home=home, clock=clock) as rt:
        vault = new_vault(rt)
        new_key(vault)
    (home / master_key.MASTER_KEY_FILE).unlink()
    (home / master_key.MASTER_META_FILE).unlink()
    with pytest.raises(ConflictError) as err:
        init_home(home)
    assert err.value.code == "master_key_missing"
    assert not master_key.exists(home)  # no new key was made behind the operator's back


def test_master_key_never_shows_in_repr_or_errors(tmp_path: Path) -> None:
    home = tmp_path / "h"
    init_home(home)
    raw = (home / master_key.MASTER_KEY_FILE).read_bytes()
    key = master_key.load_master_key(home)
    assert raw.hex() not in repr(key) and "kind='file'" in repr(key)
    with pytest.raises(MasterKeyError) as err:
        key.open(b"\x01" + b"\x00" * 40, b"ad")
    assert raw.hex() not in str(err.value)
