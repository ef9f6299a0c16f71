"""Two processes: one serves reads and writes in a loop, this one revokes the key (and runs the
health monitor). For EACH kind of revocation, the time from the key change to the first refused
request in the serving process is measured and must be under the bound; the serving process has
flushed its cached DEKs by then; after restore + `re-enable` it serves again, and every write it
reported as done reads back (none half-written, none lost).

Bounds are set low for the test: revocation bound 2 s, state refresh 0.1 s, DEK cache max age 2 s,
health interval 0.2 s, vault grace 1 s. "vault unreachable" uses FaultyVault (a FAKE wrapper around
the real local vault, which is embedded and cannot be unplugged) in the monitoring process; its time
is measured from the outage and from the end of the grace period.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from keyshift.bootstrap import init_home
from keyshift.config import Settings
from keyshift.control.monitor import run_periodic
from keyshift.control.revocation import reenable_environment
from keyshift.runtime import Runtime

from .helpers import KINDS, cmk_world, read_all, revoke

BOUND = 2.0
REFRESH = 0.1
INTERVAL = 0.2
GRACE = 1.0
SERVER = Path(__file__).with_name("serve_loop.py")


class RunningClock:
    """Real time plus an offset that tests can move (the key-expiry case moves it 61 days)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> datetime:
        self.offset += timedelta(**delta)
        return self.now()

    def set(self, when: datetime) -> None:
        self.offset = when - datetime.now(UTC)


def _lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [ln.split() for ln in path.read_text().splitlines() if ln.count(" ") == 4]


def _wait(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_each_revocation_refuses_in_another_process_within_the_bound(tmp_path, db_url):  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    init_home(home, database_url=db_url, allow_fake_clock=True)
    settings = Settings(
        home=home,
        database_url=db_url,
        revocation_bound_seconds=BOUND,
        state_refresh_seconds=REFRESH,
        dek_cache_max_age_seconds=BOUND,
        health_interval_seconds=INTERVAL,
        vault_grace_seconds=GRACE,
    )
    clock = RunningClock()
    rt = Runtime.open(settings=settings, clock=clock, principal="operator:test")
    world = cmk_world(rt, key_expires=clock.now() + timedelta(days=60))
    env_id = world.envs["contoso-prod"]
    out, stop = tmp_path / "serve.log", tmp_path / "stop"
    env = {
        **os.environ,
        "KEYSHIFT_REVOCATION_BOUND_SECONDS": str(BOUND),
        "KEYSHIFT_STATE_REFRESH_SECONDS": str(REFRESH),
        "KEYSHIFT_DEK_CACHE_MAX_AGE_SECONDS": str(BOUND),
    }
    env.pop("KEYSHIFT_NOW", None)
    args = [sys.executable, str(SERVER), str(home), env_id, str(out), str(stop)] + (
        [db_url] if db_url else []
    )
    proc = subprocess.Popen(args, env=env)
    stop_monitor = threading.Event()
    monitor = threading.Thread(target=run_periodic, args=(rt, stop_monitor), daemon=True)
    monitor.start()
    measured: dict[str, float] = {}
    try:
        for kind in KINDS:
            ready = time.time()
            _wait(
                lambda ready=ready: [ln for ln in _lines(out) if float(ln[0]) > ready and ln[3] == "ok"],
                15,
                f"the server to serve before {kind}",
            )
            t0 = time.time()
            undo = revoke(rt, kind, world, clock)
            first = _wait(
                lambda t0=t0: next((ln for ln in _lines(out) if float(ln[0]) > t0 and ln[3] != "ok"), None),
                15,
                f"a refused request after {kind}",
            )
            delta = float(first[0]) - t0
            measured[kind] = delta
            limit = BOUND + (GRACE if kind == "vault_unreachable" else 0.0)
            assert delta < limit, (kind, delta, first)
            # The serving process flushed its cached DEKs once it saw the environment disabled.
            flushed = _wait(
                lambda t0=t0: next(
                    (ln for ln in _lines(out) if float(ln[0]) > t0 and ln[3] == "environment_disabled"), None
                ),
                5,
                f"environment_disabled after {kind}",
            )
            assert flushed[4] == "0", flushed
            undo()
            _wait(lambda: _try_reenable(rt, env_id), 10, f"re-enable after {kind}")
    finally:
        stop_monitor.set()
        stop.touch()
        proc.wait(timeout=30)
        monitor.join(timeout=10)
    lines = _lines(out)
    done = {ln[2] for ln in lines if ln[1] == "put" and ln[3] == "ok"}
    refused_codes = {ln[3] for ln in lines if ln[3] != "ok"}
    assert refused_codes <= {
        "environment_disabled",
        "key_inaccessible",
        "key_disabled",
        "key_deleted",
        "key_expired",
        "access_denied",
        "key_not_found",
        "vault_unavailable",
    }, refused_codes
    stored = {k: v for k, v in read_all(rt, env_id).items() if k.startswith("w")}
    assert set(stored) == done  # every write reported done is there; nothing else is
    assert all(v == {"i": int(k[1:])} for k, v in stored.items())
    rt.close()
    report = ", ".join(f"{k} {v:.2f}s" for k, v in measured.items())
    print(
        f"\nrevocation -> first refused request (bound {BOUND}s; unreachable incl. {GRACE}s grace): {report}"
    )


def _try_reenable(rt: Runtime, env_id: str) -> bool:
    from keyshift.errors import KeyshiftError

    try:
        reenable_environment(rt, env_id)
    except KeyshiftError:
        return False
    return True


def test_a_real_worker_process_disables_on_its_health_interval(tmp_path):  # type: ignore[no-untyped-def]
    """`keyshift worker` (a separate process) runs the monitor as due maintenance: removing the grant
    disables the environment within health interval + a poll."""
    from .helpers import KEY, VAULT, env_row

    home = tmp_path / "home"
    init_home(home, allow_fake_clock=True)
    rt = Runtime.open(home=home, principal="operator:test")
    world = cmk_world(rt, rows=3)
    env_id = world.envs["contoso-prod"]
    env = {**os.environ, "KEYSHIFT_HEALTH_INTERVAL_SECONDS": "0.3"}
    env.pop("KEYSHIFT_NOW", None)
    keyshift = Path(sys.executable).with_name("keyshift")
    proc = subprocess.Popen(
        [str(keyshift), "--home", str(home), "worker", "--idle-seconds", "0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        from keyshift.control import vaults
        from keyshift.db.models import Policy

        def checked() -> object:
            with rt.transaction() as s:
                return s.get(Policy, world.policy).health_checked_at  # type: ignore[union-attr]

        first = checked()
        _wait(lambda: checked() != first, 30, "the worker's first health round")  # it is up and polling
        t0 = time.monotonic()
        vaults.revoke_key_grant(rt, VAULT, KEY, world.identity, force=True)
        _wait(lambda: env_row(rt, env_id).state == "disabled", 20, "the worker to disable the environment")
        elapsed = time.monotonic() - t0
        assert elapsed < 5.0, elapsed
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -15), err.decode()[-2000:]
    assert env_row(rt, env_id).state_reason.startswith("key revoked: identity")
    # The worker logs the state change with environment, policy and reason.
    log = err.decode()
    line = f"environment contoso-prod ({env_id}) disabled by monitor: policy {world.policy}; key revoked:"
    assert f"{line} identity" in log, log[-2000:]
    rt.close()
    print(f"\nworker process: grant removed -> environment disabled in {elapsed:.2f}s (interval 0.3s)")
