"""Real revocations go offline within the bound across processes, with no health monitor running:
two serving processes read and write one environment; the key's owner disables or destroys the key
on a real SoftHSM2 token or PyKMIP server, or removes the policy identity's grant in the local
vault. The first serving process whose cached DEK ages out gets the vault's refusal, confirms it on
a fresh connection and runs the monitor's check; the environment is disabled with the evidence
(vault, check, answer), and the other process refuses too — all within the revocation bound.

Bounds set low for the test: revocation bound 2 s (the DEK cache's max age), state refresh 0.1 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from integration.cmk_world import cmk_world
from keyshift.bootstrap import init_home
from keyshift.config import Settings
from keyshift.control import environments, vaults
from keyshift.runtime import Runtime
from servers import kmip_server, softhsm_token  # noqa: F401 - fixtures

BOUND = 2.0
REFRESH = 0.1
SERVER = Path(__file__).parents[1] / "revocation" / "serve_loop.py"

CASES = {
    # name: (vault kind, server fixture, key type, size, how the owner revokes, expected answer)
    "hsm_key_disabled": ("pkcs11", "softhsm_token", "AES", 256, "disable", "key_disabled"),
    "hsm_key_destroyed": ("pkcs11", "softhsm_token", "RSA", 2048, "purge", "key_not_found"),
    "kmip_key_revoked": ("kmip", "kmip_server", "AES", 256, "disable", "key_disabled"),
    "local_grant_removed": ("local", None, "RSA", 2048, "revoke_grant", "access_denied"),
}


def _lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [ln.split() for ln in path.read_text().splitlines() if ln.count(" ") == 4]


def _wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("case", list(CASES))
def test_refusal_goes_offline_within_the_bound_in_every_process(
    request: pytest.FixtureRequest, tmp_path: Path, db_url: str | None, case: str
) -> None:
    kind, fixture, key_type, size, how, answer = CASES[case]
    server = request.getfixturevalue(fixture) if fixture else None
    home = tmp_path / "home"
    init_home(home, database_url=db_url)
    settings = Settings(home=home, database_url=db_url, health_interval_seconds=3600.0)
    rt = Runtime.open(settings=settings, principal="operator:test")
    procs: list[subprocess.Popen[bytes]] = []
    stop = tmp_path / "stop"
    try:
        w = cmk_world(rt, kind, server, key_type=key_type, size=size, rows=5)
        env = {
            **{k: v for k, v in os.environ.items() if k != "KEYSHIFT_NOW"},
            "KEYSHIFT_REVOCATION_BOUND_SECONDS": str(BOUND),
            "KEYSHIFT_STATE_REFRESH_SECONDS": str(REFRESH),
            "KEYSHIFT_DEK_CACHE_MAX_AGE_SECONDS": str(BOUND),
        }
        outs = [tmp_path / "a.log", tmp_path / "b.log"]
        for out in outs:
            args = [sys.executable, str(SERVER), str(home), w.env, str(out), str(stop)]
            procs.append(subprocess.Popen([*args, *([db_url] if db_url else [])], env=env))
        for out in outs:
            _wait(lambda out=out: any(ln[3] == "ok" for ln in _lines(out)), 60, f"{out.name} serving")
        t0 = time.time()
        if how == "disable":
            vaults.set_key_enabled(rt, "cust", w.key, False, force=True)
        elif how == "purge":
            vaults.purge_key(rt, "cust", w.key, force=True)
        else:
            vaults.revoke_key_grant(rt, "cust", w.key, w.identity, force=True)
        firsts = []
        for out in outs:
            first = _wait(
                lambda out=out: next(
                    (ln for ln in _lines(out) if float(ln[0]) > t0 and ln[3] == "environment_disabled"), None
                ),
                30,
                f"{out.name} refusing as disabled",
            )
            firsts.append(float(first[0]) - t0)
        times = ", ".join(f"{d:.2f}s" for d in firsts)
        print(f"\n{case}: offline in each process after {times} (bound {BOUND}s)")
        # The DEK cache (max age = the bound) + the confirmation on a fresh connection + a state
        # refresh: every process is offline within the bound plus the confirmation's round trips.
        assert max(firsts) < BOUND + 1.5, firsts
        view = environments.show_environment(rt, "contoso-prod")
        assert view["state"] == "disabled" and view["delete_after"] is not None
        ev = view["state_evidence"]
        assert ev["source"] == "data_plane" and ev["vault"]["name"] == "cust", ev
        assert "fresh connection" in ev["check"] and answer in ev["answer"], ev
        assert ev["outcome"] == "refused"
    finally:
        stop.touch()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        rt.close()
    for out in outs:  # every write a serving process acknowledged is stored
        acked = {ln[2] for ln in _lines(out) if ln[1] == "put" and ln[3] == "ok"}
        assert acked, out
