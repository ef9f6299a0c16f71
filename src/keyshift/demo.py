"""`keyshift demo`: the whole BYOK -> CMK story on the embedded defaults, in a temporary home.

A BYOK tenant with three environments holding rows, audit events and files; the operator turns the
BYOK flag off; a customer key in a local vault, a policy, its grant, Managed Environments; each
environment migrated online while a background writer and reader keep working (their requests and
errors counted); every record, event and file verified; the tenant finalized; a summary.
Everything goes through the service layer, as the CLI, API and SDK do.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyshift.bootstrap import init_home
from keyshift.errors import InternalError
from keyshift.runtime import Runtime


class DemoFailed(InternalError):
    code = "demo_failed"


# The demo's throw-away PKCS#12 file lives in the demo's own temp home; not a secret.
DEMO_PFX_PASSWORD = "demo-Passw0rd!x"  # noqa: S105
ENVS = (("fabrikam-prod", "production"), ("fabrikam-uat", "sandbox"), ("fabrikam-dev", "developer"))
ROWS, EVENTS, FILES = 400, 40, 6


@dataclass
class Load:
    """A background writer and reader on one environment, counting requests and errors."""

    rt: Runtime
    env: str
    base: dict[str, Any]
    written: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"rows": {}, "events": {}, "files": {}}
    )
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _count(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # counted and reported: the demo's point is that there are none
            self.errors.append(f"{type(exc).__name__}: {getattr(exc, 'code', '')}")
        self.requests += 1

    def writer(self) -> None:
        from keyshift.stores.service import EnvironmentData

        data, i = EnvironmentData(self.rt, self.env), 0
        while not self.stop.is_set():
            rid, value = f"live-{i % 50}", {"seq": i}

            def put(rid: str = rid, value: dict[str, Any] = value) -> None:
                data.records.put("orders", rid, value)
                self.written["rows"][rid] = value

            self._count(put)

            def event(i: int = i) -> None:
                eid = data.audit.append({"action": "order.update", "seq": i})
                self.written["events"][eid] = {"action": "order.update", "seq": i}

            self._count(event)
            if i % 4 == 0:

                def upload(i: int = i) -> None:
                    body = f"live upload {i}\n".encode() * 64
                    data.files.put(f"live/{i % 5}.txt", body)
                    self.written["files"][f"live/{i % 5}.txt"] = body

                self._count(upload)
            i += 1
            time.sleep(0.002)

    def reader(self) -> None:
        from keyshift.stores.service import EnvironmentData

        data, rng = EnvironmentData(self.rt, self.env), random.Random(5)
        rows, paths = list(self.base["rows"]), list(self.base["files"])
        while not self.stop.is_set():

            def read() -> None:
                rid = rng.choice(rows)
                if data.records.get("orders", rid) != self.base["rows"][rid]:
                    raise DemoFailed("record differs")
                p = rng.choice(paths)
                if data.files.get(p) != self.base["files"][p]:
                    raise DemoFailed("file differs")
                data.audit.query(limit=20)

            self._count(read)
            time.sleep(0.002)


def _fill(rt: Runtime, env: str, seed: int) -> dict[str, Any]:
    from keyshift.stores.service import EnvironmentData

    data = EnvironmentData(rt, env)
    rows = {f"o{i:05d}": {"customer": f"c{i % 37}", "total": i * 3 + seed} for i in range(ROWS)}
    data.records.put_many("orders", list(rows.items()))
    events = {}
    for i in range(EVENTS):
        ev = {"action": "order.create", "order": f"o{i:05d}"}
        events[data.audit.append(ev)] = ev
    files = {}
    for i in range(FILES):
        body = random.Random(seed * 100 + i).randbytes(2000 + i * 30_000)
        data.files.put(f"invoices/{i}.pdf", body)
        files[f"invoices/{i}.pdf"] = body
    return {"rows": rows, "events": events, "files": files}


def _verify(rt: Runtime, env: str, expected: dict[str, Any]) -> dict[str, int]:
    from keyshift.stores.service import EnvironmentData

    data = EnvironmentData(rt, env)
    rows = {r.id: r.value for r in data.records.iter_all("orders")}
    events: dict[str, Any] = {}
    for e in data.audit.query(limit=10_000):
        if e["id"] in events:
            raise DemoFailed(f"audit event {e['id']} duplicated")
        events[e["id"]] = e["event"]
    files = {f["path"]: data.files.get(f["path"]) for f in data.files.list("")}
    for kind, got in (("rows", rows), ("events", events), ("files", files)):
        if got != expected[kind]:
            missing = set(expected[kind]) - set(got)
            raise DemoFailed(f"{env}: {kind} differ ({len(missing)} missing)")
    return {"rows": len(rows), "events": len(events), "files": len(files)}


def run_demo(home: Path | None = None, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    from keyshift.control import byok, environments, health, policies, tenants, vaults
    from keyshift.jobs.runner import Worker
    from keyshift.migrate.link import start_link
    from keyshift.stores.keys import data_keys

    started = time.monotonic()
    temp = home is None
    path = Path(tempfile.mkdtemp(prefix="keyshift-demo-")) if home is None else home
    try:
        init_home(path)
        with Runtime.open(home=path, principal="operator:demo") as rt:
            say(f"home {path}")
            tenants.create_tenant(rt, "fabrikam", byok=True)
            byok.generate(
                rt, "fabrikam", "fabrikam-2024", out=path / "fabrikam-2024.pfx", password=DEMO_PFX_PASSWORD
            )
            byok.activate(rt, "fabrikam", "fabrikam-2024")
            say("BYOK tenant fabrikam with an active tenant key (RSA-2048, PKCS#12 downloaded)")
            expected: dict[str, dict[str, Any]] = {}
            for i, (name, kind) in enumerate(ENVS):
                environments.create_environment(rt, "fabrikam", name, env_type=kind, byok=True)
                expected[name] = _fill(rt, name, i)
            say(f"3 BYOK environments, each {ROWS} rows, {EVENTS} audit events, {FILES} files — all in SQL")
            tenants.byok_flag_remove(rt, "fabrikam", ticket="MIG-2024-0042")
            say("operator removed the BYOK feature flag (ticket MIG-2024-0042)")
            vaults.create_local_vault(rt, "fabrikam-kv", soft_delete_days=90, purge_protection=True)
            vaults.create_key(rt, "fabrikam-kv", "fabrikam-cmk", "RSA", 3072)
            pol = policies.create_policy(
                rt,
                "fabrikam",
                "fabrikam-policy",
                region=rt.settings.default_region,
                vault="fabrikam-kv",
                key="fabrikam-cmk",
            )
            vaults.grant_key(rt, "fabrikam-kv", "fabrikam-cmk", pol["identity"], "get,wrapKey,unwrapKey")
            report = health.policy_health(rt, "fabrikam-policy")
            say(f"customer key fabrikam-kv/fabrikam-cmk (RSA-3072), policy health: {report.get('health')}")
            results = []
            for name, _kind in ENVS:
                environments.set_managed(rt, name, True)
                load = Load(rt, name, expected[name])
                threads = [threading.Thread(target=load.writer), threading.Thread(target=load.reader)]
                for t in threads:
                    t.start()
                keys = data_keys(rt)
                calls0 = sum(keys.vault_calls.values())
                t0 = time.monotonic()
                view = start_link(rt, "fabrikam-policy", name)
                time.sleep(0.1)
                state = Worker(rt, poll_seconds=0.01).run_job(view["id"])
                elapsed = time.monotonic() - t0
                time.sleep(0.1)
                load.stop.set()
                for t in threads:
                    t.join()
                if state != "succeeded":
                    raise DemoFailed(f"migration of {name} ended {state}")
                if load.errors:
                    raise DemoFailed(f"live load on {name} saw {len(load.errors)} errors: {load.errors[:3]}")
                exp = {k: {**expected[name][k], **load.written[k]} for k in ("rows", "events", "files")}
                data_keys(rt).flush()
                counts = _verify(rt, name, exp)
                shown = environments.show_environment(rt, name)
                results.append(
                    {
                        "environment": name,
                        "job": view["id"],
                        "seconds": round(elapsed, 2),
                        "vault_calls": sum(keys.vault_calls.values()) - calls0,
                        "load_requests": load.requests,
                        "load_errors": len(load.errors),
                        "verified": counts,
                        "mode": shown["encryption"]["mode"],
                        "managed_by": shown["encryption"].get("managed_by_display")
                        or shown["encryption"]["managed_by"],
                        "stores": shown["stores"],
                    }
                )
                say(
                    f"migrated {name} online in {elapsed:.2f}s: {load.requests} live requests, "
                    f"{len(load.errors)} errors; verified {counts['rows']} rows, {counts['events']} "
                    f"events, {counts['files']} files"
                )
            tenant = tenants.show_tenant(rt, "fabrikam")
            say(
                f"tenant finalized: sql_restriction={tenant['sql_restriction']}, BYOK vault "
                f"{tenant['byok_vault']['state']} (deleted after {tenant['byok_vault']['delete_after']})"
            )
            listed = [e["name"] for e in environments.list_environments(rt, with_policies=True)]
        return {
            "home": str(path) if not temp else None,
            "environments": results,
            "with_policies": listed,
            "tenant": {
                "sql_restriction": tenant["sql_restriction"],
                "final_byok_migration_at": tenant["final_byok_migration_at"],
                "byok_vault": tenant["byok_vault"],
            },
            "load_errors": sum(r["load_errors"] for r in results),
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        if temp:
            shutil.rmtree(path, ignore_errors=True)
