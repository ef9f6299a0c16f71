"""A world with data under a customer key, and brute-force counts over the stored data.

The brute force never looks at the coverage service's inputs shortcuts: it reads every stored row,
event document, file and feature row, takes the DEK id from the ciphertext header (records, events,
files) or the row (search, lake, backups), and counts against the set of DEKs that the wraps table
says are live under a key version (computed here in Python from all wrap rows)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from sqlalchemy import select

import keyshift.features  # noqa: F401  (registers the feature hooks)
from keyshift.control import environments, policies, tenants, vaults
from keyshift.control.health import check_policy
from keyshift.crypto.format import STREAM_HEADER_LEN, parse_record_header, parse_stream_header
from keyshift.db.models import (
    Backup,
    DataAuditRow,
    DataFile,
    DataFileChunk,
    DataRecord,
    Dek,
    DekWrap,
    LakeExport,
    SearchIndex,
    SearchPosting,
    VaultRecord,
)
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime
from keyshift.stores.audit import AuditLog
from keyshift.stores.docstore import audit_events, document_store, from_doc
from keyshift.stores.files import FileStore
from keyshift.stores.records import RecordStore

VAULT, KEY = "contoso-kv", "cmk"


def run(rt: Runtime, job_id: str) -> str:
    return Worker(rt, poll_seconds=0.01).run_job(job_id)


def linked_world(
    rt: Runtime, *, rows: int = 40, events: int = 12, files: int = 3, expires: Any = None
) -> dict[str, Any]:
    """Tenant contoso: `prod` linked to a CMK policy (records, events, files, search, lake, backup)
    and `dev` on the platform key with some rows."""
    from keyshift.features import backups, lake, search_jobs
    from keyshift.migrate.link import start_link

    tenants.create_tenant(rt, "contoso")
    prod = environments.create_environment(rt, "contoso", "prod", env_type="production")["id"]
    dev = environments.create_environment(rt, "contoso", "dev", env_type="sandbox")["id"]
    for env in ("prod", "dev"):
        environments.set_managed(rt, env, True)
    for feature in ("search", "data-lake", "long-term-retention"):
        environments.enable_feature(rt, "prod", feature)
    vaults.create_local_vault(rt, VAULT, soft_delete_days=90, purge_protection=True)
    vaults.create_key(rt, VAULT, KEY, "RSA", 2048, expires=expires)
    pol = policies.create_policy(
        rt, "contoso", "pol1", region=rt.settings.default_region, vault=VAULT, key=KEY
    )
    vaults.grant_key(rt, VAULT, KEY, pol["identity"], "get,wrapKey,unwrapKey")
    check_policy(rt, pol["id"])
    RecordStore(rt, prod).put_many("early", [(f"e{i}", {"n": i}) for i in range(5)])  # before the link
    assert run(rt, start_link(rt, "pol1", "prod")["id"]) == "succeeded"
    RecordStore(rt, prod).put_many(
        "accounts", [(f"a{i:04d}", {"name": f"n{i}", "city": "Oslo"}) for i in range(rows)]
    )
    log = AuditLog(rt, prod)
    for i in range(events):
        log.append({"i": i, "who": "alice" * (i + 1)})
    fs = FileStore(rt, prod)
    bodies = {f"docs/f{i}.bin": os.urandom(100 + 700 * i) for i in range(files)}
    for path, body in bodies.items():
        fs.put(path, body)
    view = search_jobs.set_fields(rt, "prod", "accounts", ["city"])
    assert run(rt, view["job"]) == "succeeded"
    lake.export_table(rt, "prod", "accounts")
    backups.create_backup(rt, "prod")
    RecordStore(rt, dev).put_many("t", [(f"d{i}", {"n": i}) for i in range(7)])
    return {"prod": prod, "dev": dev, "policy": pol["id"], "identity": pol["identity"], "bodies": bodies}


def live_deks(rt: Runtime, vault: str, key: str, version: str | None = None) -> dict[str, str]:
    """{dek id: environment id} of DEKs with a live wrap under the key (version), from all wraps."""
    now = rt.clock.now()
    with rt.transaction() as s:
        vid = s.scalars(select(VaultRecord.id).where(VaultRecord.name == vault)).one()
        deks = {d.id: d for d in s.scalars(select(Dek))}
        out: dict[str, str] = {}
        for w in s.scalars(select(DekWrap)):
            if w.vault_id != vid or w.key_name != key or (version is not None and w.key_version != version):
                continue
            if w.state not in ("current", "pending", "retained") or deks[w.dek_id].state == "destroyed":
                continue
            if (
                w.state == "retained"
                and w.retain_until is not None
                and w.retain_until.replace(tzinfo=now.tzinfo) <= now
            ):
                continue
            out[w.dek_id] = deks[w.dek_id].environment_id
        return out


def brute_force(rt: Runtime, deks: set[str]) -> dict[str, int]:
    """Counts and bytes of everything stored under `deks`, read directly from the stores."""
    c: Counter[str] = Counter()
    with rt.transaction() as s:
        for r in s.scalars(select(DataRecord)):
            if parse_record_header(bytes(r.value)).dek_id.hex() in deks:
                c["rows"] += 1
                c["row_bytes"] += len(r.value)
        for a in s.scalars(select(DataAuditRow)):  # SQL layout (legacy BYOK)
            if parse_record_header(bytes(a.payload)).dek_id.hex() in deks:
                c["events"] += 1
                c["event_bytes"] += len(a.payload)
        for f in s.scalars(select(DataFile)):
            first = s.get(DataFileChunk, (f.file_id, 0))
            assert first is not None
            if parse_stream_header(bytes(first.data)[:STREAM_HEADER_LEN]).dek_id.hex() in deks:
                c["files"] += 1
                c["file_bytes"] += f.size
        index_ids = set()
        for g in s.scalars(select(SearchIndex)):
            if g.dek_id in deks and g.state != "retired":
                c["search_indexes"] += 1
                index_ids.add(g.id)
        for p in s.scalars(select(SearchPosting)):
            if p.index_id in index_ids:
                c["search_postings"] += 1
        for x in s.scalars(select(LakeExport)):
            if x.dek_id in deks:
                c["lake_exports"] += 1
                c["lake_rows"] += x.rows
                c["lake_bytes"] += x.size
        for b in s.scalars(select(Backup)):
            if b.dek_id in deks and b.state == "ready":
                c["backups"] += 1
                c["backup_bytes"] += b.size
    with document_store(rt).engine.connect() as conn:
        for doc in conn.execute(select(audit_events.c.doc)).scalars():
            blob = from_doc(doc)
            if parse_record_header(blob).dek_id.hex() in deks:
                c["events"] += 1
                c["event_bytes"] += len(blob)
    root = rt.settings.home_path() / "files"
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if (
                not name.endswith(".ksf")
                or name.startswith(".tmp-")
                or ".lake" in dirpath
                or ".backups" in dirpath
            ):
                continue
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                head = f.read(STREAM_HEADER_LEN)
            if parse_stream_header(head).dek_id.hex() in deks:
                c["files"] += 1
                c["file_size_on_disk"] += os.path.getsize(full)
    return dict(c)


class Cli:
    """`keyshift --home H [--database-url U] --json ...` in-process; KEYSHIFT_NOW follows `clock`."""

    def __init__(self, home: Any, db_url: str | None, clock: Any) -> None:
        from typer.testing import CliRunner

        self.home, self.db_url, self.clock = home, db_url, clock
        self.runner = CliRunner()

    def __call__(
        self,
        *args: str,
        code: int = 0,
        as_json: bool = True,
        env: dict[str, str] | None = None,
        printed: bool = False,
    ) -> Any:
        """`printed`: the command prints its result even on a non-zero exit (e.g. `policy health`, 4 when
        not healthy): return stdout instead of the error."""
        import json

        from keyshift.cli.main import app

        base = ["--home", str(self.home)] + (["--json"] if as_json else [])
        base += ["--database-url", self.db_url] if self.db_url else []
        res = self.runner.invoke(
            app, [*base, *args], env={"KEYSHIFT_NOW": self.clock.now().isoformat(), **(env or {})}
        )
        assert res.exit_code == code, (args, res.exit_code, res.stdout, res.stderr)
        if not as_json:
            return res.stdout if code == 0 or printed else res.stderr
        if printed:
            return json.loads(res.stdout)
        if code == 0:
            return json.loads(res.stdout)
        assert res.stdout == ""
        return json.loads(res.stderr)["error"]


def key_state(rt: Runtime) -> list[tuple[Any, ...]]:
    """Local key rows, versions and grants: proof that a refused action changed nothing."""
    from keyshift.db.models import LocalKey, LocalKeyGrant, LocalKeyVersion

    with rt.transaction() as s:
        keys = [
            (k.name, k.enabled, k.current_version, k.deleted_at, k.version)
            for k in s.scalars(select(LocalKey))
        ]
        versions = [(v.key_id, v.version, v.enabled) for v in s.scalars(select(LocalKeyVersion))]
        grants = [(g.key_id, g.identity, tuple(g.permissions)) for g in s.scalars(select(LocalKeyGrant))]
    return sorted(map(repr, keys)) + sorted(map(repr, versions)) + sorted(map(repr, grants))


def audit(rt: Runtime, action: str) -> list[Any]:
    from keyshift.db.models import AdminAuditEvent

    with rt.transaction() as s:
        rows = s.scalars(
            select(AdminAuditEvent).where(AdminAuditEvent.action == action).order_by(AdminAuditEvent.id)
        )
        return [(r.outcome, r.target_id, r.reason, r.details) for r in rows]


def byok_world(rt: Runtime, tmp: Any) -> dict[str, Any]:
    """Tenant fabrikam with an active BYOK key, env `fab-prod` (SQL layout) with data, and a CMK
    policy on `fab-kv/fab-cmk` ready to take it (the BYOK flag still on)."""
    from keyshift.control import byok

    tenants.create_tenant(rt, "fabrikam", byok=True)
    byok.generate(rt, "fabrikam", "k1", out=tmp / "fab.pfx", password="correct horse battery staple 1")
    byok.activate(rt, "fabrikam", "k1")
    env = environments.create_environment(rt, "fabrikam", "fab-prod", env_type="production", byok=True)["id"]
    environments.set_managed(rt, "fab-prod", True)
    RecordStore(rt, env).put_many("t", [(f"r{i}", {"n": i}) for i in range(30)])
    log = AuditLog(rt, env)
    for i in range(9):
        log.append({"i": i})
    fs = FileStore(rt, env)
    for i in range(2):
        fs.put(f"f{i}", os.urandom(500 + i))
    vaults.create_local_vault(rt, "fab-kv", soft_delete_days=90, purge_protection=True)
    vaults.create_key(rt, "fab-kv", "fab-cmk", "RSA", 2048)
    pol = policies.create_policy(
        rt, "fabrikam", "fab-pol", region=rt.settings.default_region, vault="fab-kv", key="fab-cmk"
    )
    vaults.grant_key(rt, "fab-kv", "fab-cmk", pol["identity"], "get,wrapKey,unwrapKey")
    check_policy(rt, pol["id"])
    return {"env": env, "policy": pol["id"]}


def byok_key(rt: Runtime) -> tuple[str, str]:
    """(vault name, key name) of fabrikam's BYOK key in its BYOK vault."""
    from keyshift.db.models import ByokKey, Tenant

    with rt.transaction() as s:
        t = s.scalars(select(Tenant).where(Tenant.name == "fabrikam")).one()
        vault = s.get(VaultRecord, t.byok_vault_id)
        k = s.scalars(select(ByokKey).where(ByokKey.tenant_id == t.id)).one()
        assert vault is not None
        return vault.name, k.vault_key_name
