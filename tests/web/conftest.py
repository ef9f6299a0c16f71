"""Browser tests: a real `keyshift serve` (and `keyshift worker`) in subprocesses on a free loopback
port, driven by Playwright with Debian's Chromium at /usr/bin/chromium (never `playwright install`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
PLATFORM_NAME = "Fabrikam"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    home: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        out = open(self.home / log, "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-c", "from keyshift.cli.main import main; main()", *args],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    @contextmanager
    def running(self, port: int) -> Iterator[None]:
        """`keyshift serve` on `port` and a `keyshift worker`, up until the block ends (then stopped)."""
        server = self.start("serve", "--host", "127.0.0.1", "--port", str(port), log="serve.log")
        self.start("worker", "--idle-seconds", "0.2", log="worker.log")
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log = (self.home / "serve.log").read_text()[-2000:]
                raise AssertionError("server did not start: " + log)
            time.sleep(0.1)
        try:
            yield
        finally:
            for p in self.procs:
                p.terminate()
            for p in self.procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An initialised home (SQLite), `keyshift serve` on a free port and a `keyshift worker`,
    shared by the tests of a module (each test uses its own tenant)."""
    home = tmp_path_factory.mktemp("web") / "home"
    port = free_port()
    env = dict(
        os.environ,
        KEYSHIFT_HOME=str(home),
        KEYSHIFT_PLATFORM_NAME=PLATFORM_NAME,
        KEYSHIFT_REVOCATION_BOUND_SECONDS="5",
        KEYSHIFT_HEALTH_INTERVAL_SECONDS="1",
        KEYSHIFT_VAULT_GRACE_SECONDS="1",
    )
    env.pop("KEYSHIFT_DATABASE_URL", None)
    s = Served(url=f"http://127.0.0.1:{port}", home=home, env=env)
    from keyshift.bootstrap import init_home

    init_home(home)
    with s.running(port):
        yield s


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (CI installs it with apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(15_000)
    yield p
    context.close()


def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
