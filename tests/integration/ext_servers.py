"""Real external key servers for tests and benchmarks: a SoftHSM2 token, a PyKMIP server, moto.

Plain functions (no pytest) so that both the test fixtures (tests/servers.py) and
bench/bench_vaults.py can start them. Each starter raises `ServerUnavailable(reason)` when the
server cannot run on this machine; callers turn that into a skip with the reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


SPARE_TOKEN_LABEL = "keyshift-spare"


class ServerUnavailable(RuntimeError):
    """The server cannot be started here; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerUnavailable(f"server exited early with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ServerUnavailable(f"nothing listening on {host}:{port} after {timeout:.0f}s")


# -- SoftHSM2 ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoftHsmToken:
    module: str
    conf: Path
    label: str
    pin: str
    so_pin: str


def softhsm_module() -> str:
    for path in SOFTHSM_MODULE_CANDIDATES:
        if os.path.exists(path):
            return path
    raise ServerUnavailable("SoftHSM2 module libsofthsm2.so not found (apt-get install softhsm2)")


_TOKENS: dict[str, SoftHsmToken] = {}


def init_softhsm_token(workdir: Path, label: str = "keyshift-test") -> SoftHsmToken:
    """A fresh token in its own token directory under `workdir`; sets SOFTHSM2_CONF for this process.

    SoftHSM reads SOFTHSM2_CONF when the module is initialised, so the variable is set before any
    python-pkcs11 `lib()` call and stays set for the process (one token dir per test session).
    The token is made once per process: a session fixture imported into several test modules is
    set up once per module, and a second token directory would leave this process (whose module
    was initialised with the first) and the `keyshift` processes it starts (which read the
    variable) looking at different tokens with the same label.
    """
    made = _TOKENS.get(label)
    if made is not None:
        os.environ["SOFTHSM2_CONF"] = str(made.conf)
        return made
    module = softhsm_module()
    util = shutil.which("softhsm2-util")
    if util is None:
        raise ServerUnavailable("softhsm2-util not on PATH (apt-get install softhsm2)")
    tokens = workdir / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = workdir / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\n"
    )
    pin, so_pin = "ks-user-pin-1234", "ks-so-pin-1234"
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    res = subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise ServerUnavailable(f"softhsm2-util --init-token failed: {res.stderr.strip()[:200]}")
    # A second token nobody logs in to (PKCS#11 login state is per process and token), so that a
    # wrong PIN can be tried in-process: SPARE_TOKEN_LABEL, same PINs.
    subprocess.run(
        [util, "--init-token", "--free", "--label", SPARE_TOKEN_LABEL, "--so-pin", so_pin, "--pin", pin],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    _TOKENS[label] = SoftHsmToken(module=module, conf=conf, label=label, pin=pin, so_pin=so_pin)
    return _TOKENS[label]


# -- throwaway PKI ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _leaf(ca_cert: Any, ca_key: Any, cn: str, usage: Any, *, server: bool) -> tuple[Any, Any]:
    """A certificate (and its new key) for `cn` from the CA, valid two days; a server's names
    127.0.0.1 and localhost."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(workdir: Path, client_cn: str = "keyshift-client") -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (clientAuth)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    workdir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("keyshift-test-ca"))
        .issuer_name(name("keyshift-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_cert, server_key = _leaf(
        ca_cert, ca_key, "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, server=True
    )
    client_cert, client_key = _leaf(ca_cert, ca_key, client_cn, ExtendedKeyUsageOID.CLIENT_AUTH, server=False)
    pki = Pki(
        ca=workdir / "ca.pem",
        server_cert=workdir / "server.pem",
        server_key=workdir / "server.key",
        client_cert=workdir / "client.pem",
        client_key=workdir / "client.key",
    )
    write_key(workdir / "ca.key", ca_key)  # kept to issue further client certificates
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    pki.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    write_key(pki.server_key, server_key)
    write_key(pki.client_key, client_key)
    return pki


def issue_client_cert(pki: Pki, cn: str, stem: str) -> tuple[Path, Path]:
    """Another client certificate (clientAuth) from the PKI's CA: `<stem>.pem` and `<stem>.key`
    next to the others — a rotated certificate (same CN) or another client's (another CN)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder = pki.ca.parent
    ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    cert, key = _leaf(ca_cert, ca_key, cn, ExtendedKeyUsageOID.CLIENT_AUTH, server=False)
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# -- PyKMIP server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KmipServer:
    host: str
    port: int
    pki: Pki
    log: Path


_SERVER_MAIN = """
import ssl, sys
# The PyKMIP server builds ssl.SSLContext(PROTOCOL_TLSv1_2); keep that working on OpenSSL 3 / 3.11
# without touching the library: allow the legacy protocol constant and silence its deprecation.
import warnings
warnings.simplefilter("ignore", DeprecationWarning)
from kmip.services.server import server
sys.exit(server.main())
"""


@contextlib.contextmanager
def run_kmip_server(workdir: Path, *, timeout: float = 30.0, port: int | None = None) -> Iterator[KmipServer]:
    """Start a PyKMIP server over mutual TLS on 127.0.0.1 and stop it afterwards.

    Started again on the same `workdir` and `port`, it reuses the certificates and the key
    database: the same server coming back after an outage.
    """
    try:
        import kmip  # noqa: F401
    except ImportError as exc:  # pragma: no cover - extra not installed
        raise ServerUnavailable(f"PyKMIP not installed: {exc}") from None
    workdir.mkdir(parents=True, exist_ok=True)
    existing = Pki(
        ca=workdir / "pki" / "ca.pem",
        server_cert=workdir / "pki" / "server.pem",
        server_key=workdir / "pki" / "server.key",
        client_cert=workdir / "pki" / "client.pem",
        client_key=workdir / "pki" / "client.key",
    )
    pki = existing if existing.client_key.exists() else make_pki(workdir / "pki")
    port = port or free_port()
    policies = workdir / "policies"
    policies.mkdir(exist_ok=True)
    conf = workdir / "server.conf"
    log = workdir / "server.log"
    conf.write_text(
        "[server]\n"
        "hostname=127.0.0.1\n"
        f"port={port}\n"
        f"certificate_path={pki.server_cert}\n"
        f"key_path={pki.server_key}\n"
        f"ca_path={pki.ca}\n"
        "auth_suite=TLS1.2\n"
        f"policy_path={policies}\n"
        "enable_tls_client_auth=True\n"
        "tls_cipher_suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n"
        "logging_level=INFO\n"
        f"database_path={workdir / 'kmip.db'}\n"
    )
    with log.open("wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER_MAIN, "-f", str(conf), "-l", str(log)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    try:
        try:
            wait_for_port("127.0.0.1", port, timeout, proc)
        except ServerUnavailable as exc:
            tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
            raise ServerUnavailable(f"PyKMIP server did not start: {exc}; log tail: {tail}") from None
        yield KmipServer(host="127.0.0.1", port=port, pki=pki, log=log)
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 0.3) -> None:
    """Stop a server we started (its own process group), escalating to SIGKILL."""
    if proc.poll() is not None:
        return
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


# -- moto -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def run_moto_server() -> Iterator[str]:
    """moto's HTTP server on a free loopback port (in-process thread)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover
        raise ServerUnavailable(f"moto[server] not installed: {exc}") from None
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
