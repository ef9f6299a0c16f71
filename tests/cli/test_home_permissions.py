"""The home's state files are private even when the home directory existed before `init` (and was
created under a permissive umask): state.db and audit.db 0600, the file-store directory 0700."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyshift.bootstrap import init_home


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_existing_home_gets_private_state_files(tmp_path: Path, loose_umask: None, clock) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)  # noqa: S103 - the loose home this test is about
    init_home(home, allow_fake_clock=True)
    assert _mode(home / "state.db") == 0o600
    assert _mode(home / "audit.db") == 0o600
    assert _mode(home / "files") == 0o700

    # The document store and file storage written by the data plane keep it so.
    from keyshift.control import environments, tenants
    from keyshift.runtime import Runtime
    from keyshift.stores.service import EnvironmentData

    with Runtime.open(home=home, clock=clock, principal="operator:test") as rt:
        tenants.create_tenant(rt, "t")
        env = environments.create_environment(rt, "t", "e")["id"]
        data = EnvironmentData(rt, env)
        data.audit.append({"a": 1})
        data.files.put("x/y.bin", b"z" * 10)
    assert _mode(home / "audit.db") == 0o600
    assert _mode(home / "files") == 0o700
    for extra in home.glob("*.db-*"):
        assert _mode(extra) & 0o077 == 0, extra


def test_init_again_tightens_an_older_home(tmp_path: Path, loose_umask: None) -> None:
    home = tmp_path / "home"
    init_home(home, allow_fake_clock=True)
    for name, mode in (("state.db", 0o644), ("audit.db", 0o644), ("files", 0o755)):
        os.chmod(home / name, mode)
    init_home(home)
    assert (_mode(home / "state.db"), _mode(home / "audit.db"), _mode(home / "files")) == (
        0o600,
        0o600,
        0o700,
    )
