"""Real servers the tests start on 127.0.0.1 and stop afterwards (moto for S3/KMS, ...).

Import the fixtures you need into a conftest.py of your test folder.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's HTTP server (S3, KMS, ...) on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


# -- external key vaults (SoftHSM2 token, PyKMIP server, AWS test credentials) ---------------------


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A fresh SoftHSM2 token for the session (own SOFTHSM2_CONF and token dir); skips if absent."""
    from integration.ext_servers import ServerUnavailable, init_softhsm_token

    try:
        return init_softhsm_token(tmp_path_factory.mktemp("softhsm"))
    except ServerUnavailable as exc:
        pytest.skip(f"SoftHSM2 unavailable: {exc}")


@pytest.fixture(scope="session")
def kmip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A PyKMIP server over mutual TLS on 127.0.0.1 (throwaway CA/certs), killed after the session."""
    from integration.ext_servers import ServerUnavailable, run_kmip_server

    try:
        cm = run_kmip_server(tmp_path_factory.mktemp("kmip"))
        server = cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(f"PyKMIP server unavailable: {exc}")
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def aws_test_env() -> Iterator[dict[str, str]]:
    """Dummy AWS credentials in the environment for the session (moto accepts anything)."""
    import os

    from integration.ext_servers import AWS_TEST_ENV

    saved = {k: os.environ.get(k) for k in AWS_TEST_ENV}
    os.environ.update(AWS_TEST_ENV)
    yield dict(AWS_TEST_ENV)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
