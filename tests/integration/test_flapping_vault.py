"""A vault that flaps — moto's KMS server behind a TCP proxy that drops every connection for 0.8 s,
lets them through for 0.5 s, and again — never disables anything, however long it flaps, even when
the monitor's checks come a grace period apart (as the defaults do: 30 s and 30 s) and most of them
start while the vault is down. Each check keeps probing on fresh connections for its outage window
(here 2.5 s, about two flaps), so an outage only counts while it is continuous. The same vault
staying down past the grace period does disable, with its evidence, and recovers. Grace 5 s here.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from integration.cmk_world import cmk_world
from integration.ext_servers import AWS_TEST_ENV, run_moto_server
from keyshift.bootstrap import init_home
from keyshift.config import Settings
from keyshift.control.key_events import wire
from keyshift.control.monitor import monitor_once, outage_window
from keyshift.control.revocation import reenable_environment
from keyshift.db.models import AdminAuditEvent, Environment
from keyshift.runtime import Runtime
from keyshift.stores.records import RecordStore
from keyshift.vaults.registry import open_fresh

GRACE = 5.0
DOWN, UP = 0.8, 0.5  # one flap: 60 % of the time down
ROUNDS = 6


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 in front of `target_port`. While `down`, it resets every new and
    open connection (the vault is unreachable); otherwise it forwards bytes both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.down = False
        self.flaps = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flapping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._flap, daemon=True).start()

    @staticmethod
    def _reset(s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            s.close()

    def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            with self._lock:
                socks, self._open = list(self._open), set()
            for s in socks:
                self._reset(s)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            if self.down:
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                self._reset(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _flap(self) -> None:
        while not self._stop.is_set():
            if not self._flapping.wait(0.05):
                continue
            self.set_down(True)
            self._stop.wait(DOWN)
            self.set_down(False)
            self.flaps += 1
            self._stop.wait(UP)

    def start_flapping(self) -> None:
        self._flapping.set()

    def stop_flapping(self) -> None:
        self._flapping.clear()
        time.sleep(DOWN + UP + 0.1)

    def close(self) -> None:
        self._stop.set()
        self.set_down(True)
        self.sock.close()


def test_a_flapping_vault_never_disables_but_a_dead_one_does(
    tmp_path: Path, monkeypatch: Any, db_url: str | None
) -> None:
    for k, v in AWS_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "home"
    init_home(home, database_url=db_url)
    settings = Settings(home=home, database_url=db_url, vault_grace_seconds=GRACE)
    rt = wire(Runtime.open(settings=settings, principal="operator:test"))
    assert outage_window(rt) == 2.5 >= 1.9 * (DOWN + UP)
    with run_moto_server() as endpoint:
        proxy = FlakyProxy(int(endpoint.rsplit(":", 1)[1]))
        try:
            w = cmk_world(rt, "aws-kms", f"http://127.0.0.1:{proxy.port}", rows=5)
            assert monitor_once(rt)[w.policy]["health"] == "healthy"
            proxy.start_flapping()
            seen: list[str] = []
            down_probes = 0
            for _ in range(ROUNDS):
                down_probes += not open_fresh(rt, "cust").info().reachable  # it really is down at times
                out = monitor_once(rt)[w.policy]
                assert "health" in out, out
                seen.append(out["health"])
                assert out["environments_disabled"] == [], (seen, out)
                time.sleep(GRACE)  # checks a grace period apart, like the defaults (30 s / 30 s)
            # The probe above runs right after a monitor round, which ends when the vault answers
            # (in an "up" window), then a fixed sleep: its phase in the flap is not random and may
            # keep landing "up". So also probe 0.1 s apart over two flaps: it is down at times.
            deadline = time.monotonic() + 2 * (DOWN + UP)
            while not down_probes and time.monotonic() < deadline:
                down_probes += not open_fresh(rt, "cust").info().reachable
                time.sleep(0.1)
            proxy.stop_flapping()
            print(f"\nflapping: {proxy.flaps} flaps, monitor saw {seen}, {down_probes} probes found it down")
            assert proxy.flaps >= 15 and down_probes >= 1
            assert "unhealthy" not in seen
            with rt.transaction() as s:
                env = s.get(Environment, w.env)
                assert env is not None and env.state == "enabled" and env.delete_after is None
                disables = select(AdminAuditEvent.id).where(AdminAuditEvent.action == "environment.disable")
                assert s.scalars(disables).first() is None

            # Down for good: past the grace period the monitor disables, with its evidence.
            assert monitor_once(rt)[w.policy]["health"] == "healthy"
            proxy.set_down(True)
            t0 = time.monotonic()
            while True:
                out = monitor_once(rt)[w.policy]
                if out["environments_disabled"]:
                    break
                assert time.monotonic() - t0 < GRACE + 10, out
                time.sleep(0.1)
            assert time.monotonic() - t0 >= GRACE
            assert out["environments_disabled"] == [w.env] and out["evidence"]["outcome"] == "unreachable", (
                out
            )
            proxy.set_down(False)
            assert reenable_environment(rt, w.env)["state"] == "enabled"
            assert RecordStore(rt, w.env).get("t", "r00001") == {"n": 1}
        finally:
            proxy.close()
            rt.close()
