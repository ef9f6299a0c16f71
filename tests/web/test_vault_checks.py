"""Vault reachability on the admin pages (`web.vault_checks`): every vault of a page is checked at
once, the page waits a bounded time (a vault that has not answered shows as pending), one check per
vault is in flight however often the page is loaded, and answers are cached briefly. The last test
points an aws-kms vault at a real TCP endpoint that accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.api.readiness import Check
from keyshift.control import tokens, vaults
from keyshift.runtime import Runtime
from keyshift.web import vault_checks as vc
from servers import aws_test_env  # noqa: F401 - fixture

from .pagekit import login


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _until(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return False


def test_the_vaults_of_a_page_are_checked_at_once(sqlite_rt: Runtime) -> None:
    """Three checks that each wait for the other two (a barrier): they pass only if they run at
    the same time."""
    barrier = threading.Barrier(3, timeout=5)

    def check(_rt: Runtime, name: str) -> Check:
        barrier.wait()
        return Check(f"vault:{name}", True)

    checks = vc.VaultChecks(wait_seconds=10, check=check)
    got = checks.reachability(sqlite_rt, ["a", "b", "c"])
    assert got == {n: {"ok": True, "code": None} for n in "abc"}


def test_a_slow_vault_is_pending_checked_once_and_its_answer_cached(sqlite_rt: Runtime) -> None:
    release = threading.Event()
    calls: list[str] = []

    def check(_rt: Runtime, name: str) -> Check:
        calls.append(name)
        if name == "slow":
            release.wait(10)
            return Check("vault:slow", False, "vault_unreachable")
        return Check(f"vault:{name}", True)

    clock = Clock()
    checks = vc.VaultChecks(wait_seconds=0.2, cache_seconds=10, check=check, clock=clock)
    first = checks.reachability(sqlite_rt, ["fast", "slow"])
    assert first == {"fast": {"ok": True, "code": None}, "slow": vc.PENDING}
    again = checks.reachability(sqlite_rt, ["fast", "slow"])  # the slow check is still in flight
    assert again == first
    assert sorted(calls) == ["fast", "slow"]  # one check each: none started again
    release.set()
    assert _until(lambda: checks.reachability(sqlite_rt, ["slow"])["slow"]["ok"] is False)
    assert checks.reachability(sqlite_rt, ["slow"]) == {"slow": {"ok": False, "code": "vault_unreachable"}}
    assert sorted(calls) == ["fast", "slow"]  # answered from the cache
    clock.now += 11  # past the cache: checked again
    assert checks.reachability(sqlite_rt, ["fast"]) == {"fast": {"ok": True, "code": None}}
    assert sorted(calls) == ["fast", "fast", "slow"]


def test_a_check_that_raises_is_a_failed_check(sqlite_rt: Runtime) -> None:
    def check(_rt: Runtime, name: str) -> Check:
        raise RuntimeError("boom")

    checks = vc.VaultChecks(wait_seconds=5, check=check)
    assert checks.reachability(sqlite_rt, ["x"]) == {"x": {"ok": False, "code": "check_failed"}}


@pytest.fixture
def silent_endpoint() -> Iterator[tuple[str, list[socket.socket]]]:
    """A real TCP endpoint that accepts connections and never answers (a hung vault)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    th.join(5)
    for conn in accepted:
        conn.close()
    server.close()


def test_the_vaults_page_answers_while_a_vault_hangs(
    sqlite_rt: Runtime,
    silent_endpoint: tuple[str, list[socket.socket]],
    aws_test_env: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from keyshift.vaults.external import add_external_vault

    rt = sqlite_rt
    url, accepted = silent_endpoint
    monkeypatch.setattr(vc, "vault_checks", vc.VaultChecks(wait_seconds=1.0))
    monkeypatch.setattr("keyshift.web.pages_vaults.vault_checks", vc.vault_checks)
    add_external_vault(rt, "hung-kms", "aws-kms", {"endpoint_url": url, "region": "us-east-1"})
    vaults.create_local_vault(rt, "good-vault")
    operator = tokens.create_token(rt, "operator")["token"]
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        login(client, operator)
        started = time.monotonic()
        html = client.get("/vaults").text
        first_load = time.monotonic() - started
        assert first_load < 6, first_load  # the check's own read timeout is 10 s
        row = html[html.index("hung-kms") :]
        assert "no answer yet" in row.split("</tr>")[0] and "check_pending" in row.split("</tr>")[0]
        good = html[html.index("good-vault") :].split("</tr>")[0]
        assert 'badge state-enabled">reachable' in good
        started = time.monotonic()
        again = client.get("/vaults").text  # reloaded while the check still hangs
        assert time.monotonic() - started < 6
        assert "check_pending" in again[again.index("hung-kms") :].split("</tr>")[0]
    assert _until(lambda: len(accepted) >= 1)
    time.sleep(0.3)
    assert len(accepted) == 1  # two page loads, one check in flight
