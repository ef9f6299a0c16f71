"""Key vault providers side by side: wrap/unwrap latency (median, p99) and vault calls per workload.

Providers: the embedded local vault (baseline), pkcs11 on SoftHSM2 (AES-256 RFC 5649 key wrap and
RSA-2048 OAEP), kmip on a PyKMIP server over mutual TLS (AES-256, our HMAC envelope) and aws-kms on
moto's server. Each server is started here on 127.0.0.1 and stopped afterwards; a provider whose
server cannot start is reported unavailable with the reason.

* latency: N single-DEK wraps then N unwraps, each timed alone (perf_counter); median and p99 in
  milliseconds. Includes everything a data-plane call pays (state checks, round trips).
* vault calls: a counting wrapper (FaultyVault with no faults) around the environment's CMK vault
  while (a) 10,000 records are written, the DEK cache flushed, and all read back, and (b) an
  environment holding ROWS_SMALL then ROWS_LARGE rows is migrated platform -> CMK, and (c) a legacy
  BYOK environment (rows, audit events, files) is migrated BYOK -> CMK. Vault calls depend on the
  number of DEKs, not of rows. KS_BENCH_VAULT_ROWS_LARGE=1000000 runs the 1,000,000-row migration
  (about a minute to fill per provider); by default 20,000.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import Report

ROOT = Path(__file__).resolve().parents[1]
LATENCY_N = int(os.environ.get("KS_BENCH_VAULT_N", "200"))
RECORDS = 10_000
ROWS_SMALL = 2_000
ROWS_LARGE = int(os.environ.get("KS_BENCH_VAULT_ROWS_LARGE", "20000"))  # 1000000 for the full claim
BYOK_ROWS, BYOK_EVENTS, BYOK_FILES = 10_000, 200, 20
PIN_VAR = "KS_BENCH_HSM_PIN"


def _servers() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    from integration import ext_servers

    return ext_servers


# -- providers ------------------------------------------------------------------------------------


class Providers(contextlib.ExitStack):
    """Starts what each provider needs; `configs[name] = (kind, config, key_type, size)`."""

    def __init__(self, tmp: Path) -> None:
        super().__init__()
        self.tmp = tmp
        self.configs: dict[str, tuple[str, dict[str, Any], str, int]] = {}
        self.unavailable: dict[str, str] = {}

    def start(self) -> Providers:
        ext = _servers()
        try:
            tok = ext.init_softhsm_token(self.tmp / "softhsm")
            os.environ[PIN_VAR] = tok.pin
            cfg = {"module": tok.module, "token_label": tok.label, "pin": {"env": PIN_VAR}}
            self.configs["pkcs11 AES-KWP"] = ("pkcs11", cfg, "AES", 256)
            self.configs["pkcs11 RSA-OAEP"] = ("pkcs11", cfg, "RSA", 2048)
        except Exception as exc:
            self.unavailable["pkcs11"] = f"{type(exc).__name__}: {exc}"
        try:
            srv = self.enter_context(ext.run_kmip_server(self.tmp / "kmip"))
            cfg = {
                "host": srv.host,
                "port": srv.port,
                "cert": str(srv.pki.client_cert),
                "key": str(srv.pki.client_key),
                "ca": str(srv.pki.ca),
            }
            self.configs["kmip AES"] = ("kmip", cfg, "AES", 256)
        except Exception as exc:
            self.unavailable["kmip"] = f"{type(exc).__name__}: {exc}"
        try:
            import logging

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            os.environ.update(ext.AWS_TEST_ENV)
            url = self.enter_context(ext.run_moto_server())
            self.configs["aws-kms (moto)"] = (
                "aws-kms",
                {"endpoint_url": url, "region": "us-east-1"},
                "AES",
                256,
            )
        except Exception as exc:
            self.unavailable["aws-kms"] = f"{type(exc).__name__}: {exc}"
        return self


@contextlib.contextmanager
def _home(tmp: Path, name: str) -> Iterator[Any]:
    from keyshift.bootstrap import init_home
    from keyshift.runtime import Runtime

    home = tmp / f"home-{name.replace(' ', '-').replace('(', '').replace(')', '')}"
    init_home(home)
    rt = Runtime.open(home=home, principal="operator:bench")
    try:
        yield rt
    finally:
        rt.close()


def _customer_key(rt: Any, label: str, spec: tuple[str, dict[str, Any], str, int] | None) -> tuple[str, str]:
    """Register the customer vault (local when spec is None) and create the CMK; (vault, key)."""
    from keyshift.control import vaults
    from keyshift.vaults.external import add_external_vault

    if spec is None:
        vaults.create_local_vault(rt, "cust", soft_delete_days=90, purge_protection=True)
        key_type, size = "RSA", 2048
    else:
        kind, cfg, key_type, size = spec
        add_external_vault(rt, "cust", kind, cfg, soft_delete_days=30, purge_protection=True)
    key = f"cmk-{os.urandom(3).hex()}"
    vaults.create_key(rt, "cust", key, key_type, size)
    return "cust", key


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def _latency(rt: Any, vault_name: str, key: str, identity: str) -> tuple[list[float], list[float]]:
    from keyshift.vaults.base import KeyRef

    vault = rt.vault(vault_name)
    ref = KeyRef(vault_name, key)
    ctx = {"tenant": "bench", "environment": "bench-prod", "store": "records"}
    for _ in range(5):  # warm up: connections, sessions, mechanism probes
        vault.unwrap(
            vault.wrap(ref, os.urandom(32), identity=identity, context=ctx), identity=identity, context=ctx
        )
    wrapped, wrap_ms, unwrap_ms = [], [], []
    for _ in range(LATENCY_N):
        dek = os.urandom(32)
        t0 = time.perf_counter()
        w = vault.wrap(ref, dek, identity=identity, context=ctx)
        wrap_ms.append((time.perf_counter() - t0) * 1000)
        wrapped.append((w, dek))
    for w, dek in wrapped:
        t0 = time.perf_counter()
        got = vault.unwrap(w, identity=identity, context=ctx)
        unwrap_ms.append((time.perf_counter() - t0) * 1000)
        if got != dek:
            raise AssertionError("unwrap returned another value")
    return wrap_ms, unwrap_ms


# -- vault calls per workload -----------------------------------------------------------------------


def _cmk_env(rt: Any, vault: str, key: str, env: str, rows: int) -> tuple[str, Callable[[], dict[str, int]]]:
    """A managed environment with `rows` rows under the platform key, a healthy policy on the CMK,
    and a counter installed around the CMK vault. Returns (policy id, counts)."""
    from keyshift.control import environments, policies, tenants, vaults
    from keyshift.control.health import check_policy
    from keyshift.stores.records import RecordStore
    from keyshift.vaults.faults import FaultyVault

    tenants.create_tenant(rt, f"t-{env}")
    view = environments.create_environment(rt, f"t-{env}", env, env_type="production")
    environments.set_managed(rt, env, True)
    store = RecordStore(rt, str(view["id"]))
    for start in range(0, rows, 1000):
        store.put_many(
            "t", [(f"r{i:07d}", {"n": i, "pad": "x" * 80}) for i in range(start, min(rows, start + 1000))]
        )
    pol = policies.create_policy(
        rt, f"t-{env}", f"p-{env}", region=rt.settings.default_region, vault=vault, key=key
    )
    if rt.vault(vault).kind == "local":
        vaults.grant_key(rt, vault, key, pol["identity"], "get,wrapKey,unwrapKey")
    report = check_policy(rt, pol["id"])
    if report.status not in ("healthy", "warning"):
        raise RuntimeError(f"policy not healthy: {report.reasons}")
    vault_id = str(vaults.show_vault(rt, vault)["id"])
    inner = rt.vault(vault)
    counter = rt._vaults.get(vault_id)
    if not isinstance(counter, FaultyVault):
        counter = FaultyVault(inner)
        rt._vaults[vault] = rt._vaults[vault_id] = counter
    base = dict(counter.calls)

    def counts() -> dict[str, int]:
        return {k: v - base.get(k, 0) for k, v in counter.calls.items() if v - base.get(k, 0)}

    return str(pol["id"]), counts


def _migrate(rt: Any, policy: str, env: str) -> None:
    from keyshift.jobs.runner import Worker
    from keyshift.migrate.link import start_link

    job = start_link(rt, policy, env)
    state = Worker(rt, poll_seconds=0.01).run_job(job["id"])
    if state != "succeeded":
        raise RuntimeError(f"migration job ended {state}")


def _byok_migration(rt: Any, vault: str, key: str) -> dict[str, int]:
    """A legacy BYOK environment (rows, audit events and files in SQL) migrated to the CMK."""
    from keyshift.control import byok, environments, policies, tenants, vaults
    from keyshift.control.health import check_policy
    from keyshift.stores.audit import AuditLog
    from keyshift.stores.files import FileStore
    from keyshift.stores.records import RecordStore
    from keyshift.vaults.faults import FaultyVault

    tenant = "byok-t"
    tenants.create_tenant(rt, tenant, byok=True)
    with tempfile.TemporaryDirectory(prefix="ks-bench-byok-") as pfx_dir:
        byok.generate(rt, tenant, "k1", out=Path(pfx_dir) / "k1.pfx", password="bench password 1234")
    byok.activate(rt, tenant, "k1")
    env_id = str(
        environments.create_environment(rt, tenant, "byok-env", env_type="production", byok=True)["id"]
    )
    environments.set_managed(rt, "byok-env", True)
    rows = RecordStore(rt, env_id)
    for start in range(0, BYOK_ROWS, 1000):
        rows.put_many("t", [(f"b{i:06d}", {"n": i}) for i in range(start, start + 1000)])
    log = AuditLog(rt, env_id)
    for i in range(BYOK_EVENTS):
        log.append({"i": i})
    files = FileStore(rt, env_id)
    for i in range(BYOK_FILES):
        files.put(f"docs/f{i}.bin", os.urandom(4096))
    pol = policies.create_policy(
        rt, tenant, "byok-pol", region=rt.settings.default_region, vault=vault, key=key
    )
    if rt.vault(vault).kind == "local":
        vaults.grant_key(rt, vault, key, pol["identity"], "get,wrapKey,unwrapKey")
    check_policy(rt, pol["id"])
    vault_id = str(vaults.show_vault(rt, vault)["id"])
    counter = rt._vaults.get(vault_id)
    if not isinstance(counter, FaultyVault):
        counter = FaultyVault(rt.vault(vault))
        rt._vaults[vault] = rt._vaults[vault_id] = counter
    base = dict(counter.calls)
    tenants.byok_flag_remove(rt, tenant, ticket="BENCH-1")
    _migrate(rt, str(pol["id"]), "byok-env")
    return {k: v - base.get(k, 0) for k, v in counter.calls.items() if v - base.get(k, 0)}


def _workloads(rt: Any, vault: str, key: str) -> dict[str, dict[str, int]]:
    from keyshift.stores.keys import data_keys
    from keyshift.stores.records import RecordStore

    out: dict[str, dict[str, int]] = {}
    for label, rows in (("small", ROWS_SMALL), ("large", ROWS_LARGE)):
        env = f"mig-{label}"
        policy, counts = _cmk_env(rt, vault, key, env, rows)
        _migrate(rt, policy, env)
        out[f"migrate {rows:,} rows"] = counts()
    out[f"BYOK->CMK {BYOK_ROWS:,} rows, {BYOK_EVENTS} events, {BYOK_FILES} files"] = _byok_migration(
        rt, vault, key
    )
    # 10,000 records written to and read back from a CMK environment (fresh DEK cache for the reads).
    policy, counts = _cmk_env(rt, vault, key, "work", 0)
    _migrate(rt, policy, "work")
    base = counts()
    from keyshift.control.environments import show_environment

    env_id = str(show_environment(rt, "work")["id"])
    store = RecordStore(rt, env_id)
    for start in range(0, RECORDS, 1000):
        store.put_many("t", [(f"w{i:06d}", {"n": i}) for i in range(start, start + 1000)])
    data_keys(rt).flush()
    n = sum(1 for _ in store.iter_all("t"))
    if n != RECORDS:
        raise AssertionError(f"read back {n} records")
    after = counts()
    out[f"{RECORDS:,} records write+read"] = {
        k: v - base.get(k, 0) for k, v in after.items() if v - base.get(k, 0)
    }
    return out


# -- entry point ------------------------------------------------------------------------------------


def run(report: Report) -> None:
    lat = report.section(
        "vault latency (ms, lower is better)",
        f"{LATENCY_N} single-DEK wraps then unwraps per provider, each call timed; servers on 127.0.0.1; "
        "ratio = provider / local vault",
    )
    lat.higher_is_better = False
    calls = report.section(
        "vault calls per workload",
        f"calls made to the CMK vault: {RECORDS:,} records written and read back (cache flushed before "
        f"reading); platform->CMK migration of {ROWS_SMALL:,} and {ROWS_LARGE:,} rows; BYOK->CMK migration. "
        "Calls scale with DEKs, not rows (KS_BENCH_VAULT_ROWS_LARGE=1000000 for the 1M-row run).",
    )
    calls.higher_is_better = False
    with tempfile.TemporaryDirectory(prefix="ks-bench-vaults-") as tmp_s, Providers(Path(tmp_s)) as provs:
        tmp = Path(tmp_s)
        provs.start()
        for name, reason in provs.unavailable.items():
            print(f"[vaults] {name} unavailable: {reason}")
            lat.unavailable("wrap p50", name, reason)
        specs: list[tuple[str, Any]] = [("local", None), *provs.configs.items()]
        for name, spec in specs:
            try:
                with _home(tmp, name) as rt:
                    vault, key = _customer_key(rt, name, spec)
                    identity = "bench-identity"
                    if spec is None:
                        from keyshift.control import vaults as vaults_svc

                        vaults_svc.grant_key(rt, vault, key, identity, "get,wrapKey,unwrapKey")
                    wrap_ms, unwrap_ms = _latency(rt, vault, key, identity)
                    base = name == "local"
                    lat.add("wrap p50", name, statistics.median(wrap_ms), "ms", baseline=base)
                    lat.add("wrap p99", name, _percentile(wrap_ms, 0.99), "ms", baseline=base)
                    lat.add("unwrap p50", name, statistics.median(unwrap_ms), "ms", baseline=base)
                    lat.add("unwrap p99", name, _percentile(unwrap_ms, 0.99), "ms", baseline=base)
                    if name == "pkcs11 AES-KWP":
                        continue  # a CMK on an HSM must be RSA (health rule); counted with RSA-OAEP
                    for workload, counted in _workloads(rt, vault, key).items():
                        total = sum(counted.values())
                        note = ", ".join(f"{k} {v}" for k, v in sorted(counted.items()))
                        calls.add(workload, name, total, "calls", baseline=base, note=note)
            except Exception as exc:
                print(f"[vaults] {name} failed: {type(exc).__name__}: {exc}")
                lat.unavailable("wrap p50", name, f"{type(exc).__name__}: {exc}")
