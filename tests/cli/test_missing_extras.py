"""Without an optional extra, its feature names the extra to install (typed error, no traceback) and
everything else (the API server included) still starts. pyarrow is hidden from the subprocess by
`sys.modules["pyarrow"] = None` (import then fails exactly as if it were not installed); .ci/wheel_smoke
checks the same on a real install without extras."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from subproc import clean_env, ks

HIDE = "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None; "


def _ks_without_pyarrow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = HIDE + "from keyshift.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_lake_without_pyarrow_names_the_extra(tmp_path: Path) -> None:
    env = clean_env(KEYSHIFT_HOME=str(tmp_path / "h"))
    for args in (["init"], ["tenant", "create", "t"], ["env", "create", "t", "e"]):
        assert ks(*args, env=env).code == 0
    ks("env", "feature", "enable", "e", "data-lake", env=env)
    for args in (["lake", "export", "e", "t"], ["lake", "list", "e"]):
        r = _ks_without_pyarrow(*args, "--json", env=env)
        assert r.returncode == 4, r.stderr
        err = json.loads(r.stderr)["error"]
        assert err["code"] == "extra_not_installed" and "pip install 'keyshift[lake]'" in err["message"]
        human = _ks_without_pyarrow(*args, env=env)
        assert human.returncode == 4 and "keyshift[lake]" in human.stderr
        assert "Traceback" not in human.stderr


def test_api_app_builds_without_pyarrow() -> None:
    code = HIDE + "import keyshift.api.app, keyshift.api.routes; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def _ks_hiding(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = f"import sys; sys.modules[{module!r}] = None; from keyshift.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_pkcs11_vault_without_python_pkcs11_names_the_extra(tmp_path: Path) -> None:
    env = clean_env(KEYSHIFT_HOME=str(tmp_path / "h"), HSM_PIN="1234")
    assert ks("init", env=env).code == 0
    add = (
        "vault", "add", "hsm1", "--kind", "pkcs11", "--module", "/usr/lib/softhsm/libsofthsm2.so",
        "--token-label", "t", "--pin-env", "HSM_PIN", "--soft-delete-days", "90", "--purge-protection",
    )  # fmt: skip
    assert _ks_hiding("pkcs11", *add, "--json", env=env).returncode == 0  # registering contacts nothing
    r = _ks_hiding(
        "pkcs11", "key", "create", "hsm1", "k", "--type", "AES", "--size", "256", "--json", env=env
    )
    assert r.returncode == 6, r.stderr
    err = json.loads(r.stderr)["error"]
    assert err["code"] == "vault_client_missing" and "pip install 'keyshift[hsm]'" in err["message"]
    shown = _ks_hiding("pkcs11", "vault", "show", "hsm1", "--json", env=env)
    assert shown.returncode == 0 and "keyshift[hsm]" in json.loads(shown.stdout)["detail"]
