"""Key coverage: what, exactly, is still encrypted under a key version.

Everything starts from the DEK wraps: a key version covers a DEK while the DEK (not destroyed) has a
`current`, `pending` or `retained` wrap under it (a retained wrap whose `retain_until` has passed is
no longer counted: the next maintenance run destroys it). What depends on a DEK is then counted per
DEK id with grouped queries, a bounded number per environment (chunks of `CHUNK` DEK ids), never a
per-row loop:

* rows:      `data_records` GROUP BY dek_id, on the (environment_id, dek_id) index; the byte total
             reads each row's stored length in the same grouped query;
* events:    SQL layout `data_audit` and the document store's `audit_events` (the DEK id sits in
             the document), one grouped query each, scanning that environment's events;
* files:     SQL layout `data_files` GROUP BY dek_id (scan of the environment's file rows); file
             storage (directory or S3) has no index of DEK ids, so the 63-byte stream header of each
             of the environment's files is read — O(files) small reads, reported as `header_scan`;
* search:    `search_indexes` by dek_id (not retired) and their postings GROUP BY index_id;
* lake:      `lake_exports` GROUP BY dek_id (files, rows, bytes);
* backups:   `backups` (state ready) GROUP BY dek_id.

Nothing here calls a vault, so coverage is available while a vault is down.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from keyshift.clock import utc
from keyshift.control.common import get_environment, get_vault_record, iso
from keyshift.control.refs import tenant_ref, vault_ref
from keyshift.db.models import (
    Backup,
    DataAuditRow,
    DataFile,
    DataRecord,
    Dek,
    DekWrap,
    Environment,
    LakeExport,
    SearchIndex,
    SearchPosting,
    Tenant,
    VaultRecord,
)
from keyshift.runtime import Runtime

CHUNK = 500
LIVE_STATES = ("current", "pending", "retained")
_RANK = {"current": 0, "pending": 1, "retained": 2}
COUNTERS = (
    "rows",
    "row_bytes",
    "events",
    "event_bytes",
    "files",
    "file_bytes",
    "search_indexes",
    "search_postings",
    "lake_exports",
    "lake_rows",
    "lake_bytes",
    "backups",
    "backup_bytes",
)
METHODS = {
    "rows": "grouped count on the (environment_id, dek_id) index",
    "events": "grouped count per environment (scans that environment's events)",
    "files": "grouped count (SQL layout); stream header read per file (file storage)",
    "search": "grouped count of indexes and postings",
    "lake": "grouped count of exports",
    "backups": "grouped count of ready backups",
}


@dataclass
class WrapRef:
    dek_id: str
    store: str
    env_id: str
    env_name: str
    tenant_id: str
    tenant_name: str
    vault_id: str
    vault_name: str
    key_name: str
    key_version: str
    state: str
    retain_until: datetime | None
    identity: str | None


@dataclass
class _Group:
    """What one (vault, key, version) covers."""

    deks: dict[str, WrapRef] = field(default_factory=dict)  # dek id -> strongest wrap

    def add(self, w: WrapRef) -> None:
        have = self.deks.get(w.dek_id)
        if have is None or _RANK[w.state] < _RANK[have.state]:
            self.deks[w.dek_id] = w


# -- the wraps ------------------------------------------------------------------------------------


def live_wraps(session: Session, now: datetime, *filters: Any) -> list[WrapRef]:
    """Every live wrap matching `filters` (on DekWrap / Dek / Environment columns)."""
    stmt = (
        select(
            DekWrap.dek_id,
            Dek.store,
            Dek.environment_id,
            Environment.name,
            Environment.tenant_id,
            Tenant.name,
            DekWrap.vault_id,
            VaultRecord.name,
            DekWrap.key_name,
            DekWrap.key_version,
            DekWrap.state,
            DekWrap.retain_until,
            DekWrap.identity,
        )
        .join(Dek, Dek.id == DekWrap.dek_id)
        .join(Environment, Environment.id == Dek.environment_id)
        .join(Tenant, Tenant.id == Environment.tenant_id)
        .join(VaultRecord, VaultRecord.id == DekWrap.vault_id)
        .where(
            DekWrap.state.in_(LIVE_STATES),
            Dek.state != "destroyed",
            or_(
                DekWrap.state != "retained",
                DekWrap.retain_until.is_(None),
                DekWrap.retain_until > now,
            ),
            *filters,
        )
        .order_by(Dek.environment_id, DekWrap.dek_id)
    )
    out: list[WrapRef] = []
    for row in session.execute(stmt):
        (dek, store, env_id, env_name, tenant_id, tenant_name, vault_id, vault_name, key, ver, state) = row[
            :11
        ]
        out.append(
            WrapRef(
                dek,
                store,
                env_id,
                env_name,
                tenant_id,
                tenant_name,
                vault_id,
                vault_name,
                key,
                ver,
                state,
                utc(row[11]) if row[11] is not None else None,
                row[12],
            )
        )
    return out


# -- what depends on the DEKs ---------------------------------------------------------------------


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), CHUNK):
        yield list(ids[i : i + CHUNK])


def _add(out: dict[str, dict[str, int]], dek: str, **values: Any) -> None:
    slot = out.setdefault(dek, dict.fromkeys(COUNTERS, 0))
    for k, v in values.items():
        slot[k] += int(v or 0)


def dek_usage(rt: Runtime, session: Session, deks: Iterable[WrapRef]) -> dict[str, dict[str, int]]:
    """{dek id: counters} for the given DEKs (grouped queries per environment and store)."""
    by_env: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for w in deks:
        ids = by_env[w.env_id][w.store]
        if w.dek_id not in ids:
            ids.append(w.dek_id)
    out: dict[str, dict[str, int]] = {}
    for env_id, stores in by_env.items():
        for dek_id in (d for ids in stores.values() for d in ids):
            _add(out, dek_id)
        _records(session, env_id, stores.get("records", []), out)
        _events(rt, session, env_id, stores.get("audit", []), out)
        _files(rt, session, env_id, stores.get("files", []), out)
        _search(session, env_id, stores.get("search", []), out)
        _lake(session, env_id, stores.get("lake", []), out)
        _backups(session, env_id, stores.get("backup", []), out)
    return out


def _records(session: Session, env_id: str, ids: list[str], out: dict[str, dict[str, int]]) -> None:
    r = DataRecord
    for chunk in _chunks(ids):
        stmt = (
            select(r.dek_id, func.count(), func.sum(func.length(r.value)))
            .where(r.environment_id == env_id, r.dek_id.in_(chunk))
            .group_by(r.dek_id)
        )
        for dek, n, nbytes in session.execute(stmt):
            _add(out, dek, rows=n, row_bytes=nbytes)


def _events(
    rt: Runtime, session: Session, env_id: str, ids: list[str], out: dict[str, dict[str, int]]
) -> None:
    if not ids:
        return
    a = DataAuditRow
    for chunk in _chunks(ids):
        stmt = (
            select(a.dek_id, func.count(), func.sum(func.length(a.payload)))
            .where(a.environment_id == env_id, a.dek_id.in_(chunk))
            .group_by(a.dek_id)
        )
        for dek, n, nbytes in session.execute(stmt):
            _add(out, dek, events=n, event_bytes=nbytes)
    from keyshift.stores.docstore import audit_events, document_store

    t = audit_events
    dek_col = t.c.doc["dek"].as_string()
    ct = t.c.doc["ct"].as_string()
    # The ciphertext is base64 in the document: decoded bytes = 3/4 of the length minus padding.
    pad = case((ct.like("%=="), 2), (ct.like("%="), 1), else_=0)
    with document_store(rt).engine.begin() as conn:
        for chunk in _chunks(ids):
            stmt = (
                select(dek_col, func.count(), func.sum(func.length(ct)), func.sum(pad))
                .where(t.c.environment_id == env_id, dek_col.in_(chunk))
                .group_by(dek_col)
            )
            for dek, n, chars, pads in conn.execute(stmt):
                _add(out, dek, events=n, event_bytes=int(chars or 0) * 3 // 4 - int(pads or 0))


def _files(
    rt: Runtime, session: Session, env_id: str, ids: list[str], out: dict[str, dict[str, int]]
) -> None:
    if not ids:
        return
    f = DataFile
    for chunk in _chunks(ids):
        stmt = (
            select(f.dek_id, func.count(), func.sum(f.size))
            .where(f.environment_id == env_id, f.dek_id.in_(chunk))
            .group_by(f.dek_id)
        )
        for dek, n, nbytes in session.execute(stmt):
            _add(out, dek, files=n, file_bytes=nbytes)
    from keyshift.crypto.format import STREAM_HEADER_LEN, parse_stream_header
    from keyshift.errors import KeyshiftError
    from keyshift.stores.file_backends import backend

    wanted = set(ids)
    store = backend(rt, "file_storage")
    for info in store.list(env_id, ""):
        src = store.open(env_id, info.path)
        if src is None:  # deleted meanwhile
            continue
        with src:
            head = b""
            while len(head) < STREAM_HEADER_LEN:
                part = src.read(STREAM_HEADER_LEN - len(head))
                if not part:
                    break
                head += part
        try:
            dek = parse_stream_header(head).dek_id.hex()
        except (KeyshiftError, ValueError):
            continue  # not a Keyshift stream: nothing a key covers
        if dek in wanted:
            _add(out, dek, files=1, file_bytes=info.size)


def _search(session: Session, env_id: str, ids: list[str], out: dict[str, dict[str, int]]) -> None:
    if not ids:
        return
    index_dek: dict[str, str] = {}
    for chunk in _chunks(ids):
        stmt = select(SearchIndex.id, SearchIndex.dek_id).where(
            SearchIndex.environment_id == env_id,
            SearchIndex.dek_id.in_(chunk),
            SearchIndex.state != "retired",
        )
        for index_id, dek in session.execute(stmt):
            index_dek[index_id] = dek
            _add(out, dek, search_indexes=1)
    for chunk in _chunks(list(index_dek)):
        postings = (
            select(SearchPosting.index_id, func.count())
            .where(SearchPosting.index_id.in_(chunk))
            .group_by(SearchPosting.index_id)
        )
        for index_id, n in session.execute(postings):
            _add(out, index_dek[index_id], search_postings=n)


def _lake(session: Session, env_id: str, ids: list[str], out: dict[str, dict[str, int]]) -> None:
    for chunk in _chunks(ids):
        stmt = (
            select(LakeExport.dek_id, func.count(), func.sum(LakeExport.rows), func.sum(LakeExport.size))
            .where(LakeExport.environment_id == env_id, LakeExport.dek_id.in_(chunk))
            .group_by(LakeExport.dek_id)
        )
        for dek, n, rows, nbytes in session.execute(stmt):
            _add(out, dek, lake_exports=n, lake_rows=rows, lake_bytes=nbytes)


def _backups(session: Session, env_id: str, ids: list[str], out: dict[str, dict[str, int]]) -> None:
    for chunk in _chunks(ids):
        stmt = (
            select(Backup.dek_id, func.count(), func.sum(Backup.size))
            .where(Backup.environment_id == env_id, Backup.dek_id.in_(chunk), Backup.state == "ready")
            .group_by(Backup.dek_id)
        )
        for dek, n, nbytes in session.execute(stmt):
            _add(out, dek, backups=n, backup_bytes=nbytes)


# -- views ----------------------------------------------------------------------------------------


def _group_view(group: _Group, usage: dict[str, dict[str, int]]) -> dict[str, Any]:
    totals = dict.fromkeys(COUNTERS, 0)
    states = dict.fromkeys(LIVE_STATES, 0)
    stores: dict[str, dict[str, int]] = {}
    envs: dict[str, dict[str, Any]] = {}
    windows: dict[tuple[str, str, str | None], int] = defaultdict(int)
    for dek_id, w in group.deks.items():
        u = usage.get(dek_id, dict.fromkeys(COUNTERS, 0))
        states[w.state] += 1
        st = stores.setdefault(w.store, {"data_keys": 0})
        st["data_keys"] += 1
        env = envs.setdefault(
            w.env_id,
            {
                "id": w.env_id,
                "name": w.env_name,
                "tenant": {"id": w.tenant_id, "name": w.tenant_name},
                "stores": [],
                "data_keys": dict.fromkeys(LIVE_STATES, 0),
                **dict.fromkeys(COUNTERS, 0),
            },
        )
        env["data_keys"][w.state] += 1
        if w.store not in env["stores"]:
            env["stores"].append(w.store)
        for k in COUNTERS:
            totals[k] += u[k]
            env[k] += u[k]
        if w.state == "retained":
            windows[(w.env_name, w.env_id, iso(w.retain_until))] += 1
    for env in envs.values():
        env["stores"].sort()
    tenants = {w.tenant_id: w.tenant_name for w in group.deks.values()}
    return {
        "covered": bool(group.deks),
        "data_keys": {"total": len(group.deks), **states},
        "tenants": [{"id": i, "name": n} for i, n in sorted(tenants.items(), key=lambda kv: (kv[1], kv[0]))],
        "environments": sorted(envs.values(), key=lambda e: e["name"]),
        "stores": dict(sorted(stores.items())),
        "totals": totals,
        "retained_windows": [
            {"environment": {"id": env_id, "name": env_name}, "until": until, "data_keys": n}
            for (env_name, env_id, until), n in sorted(
                windows.items(), key=lambda kv: (kv[0][2] or "~", kv[0][0], kv[0][1])
            )
        ],
    }


def _grouped(
    rt: Runtime, session: Session, wraps: list[WrapRef], counts: bool = True
) -> tuple[dict[tuple[str, str, str, str], dict[str, Any]], dict[str, Any]]:
    """Views per (vault name, vault id, key, version), and one view of all the wraps together
    (each DEK once)."""
    groups: dict[tuple[str, str, str, str], _Group] = defaultdict(_Group)
    together = _Group()
    for w in wraps:
        groups[(w.vault_name, w.vault_id, w.key_name, w.key_version)].add(w)
        together.add(w)
    usage = dek_usage(rt, session, wraps) if counts else {}
    return {k: _group_view(g, usage) for k, g in groups.items()}, _group_view(together, usage)


def _version_sort(v: str) -> tuple[int, int | str]:
    return (0, int(v)) if v.isdigit() else (1, v)


def key_coverage(
    rt: Runtime,
    vault: str,
    key: str,
    *,
    version: str | None = None,
    identity: str | None = None,
    vault_versions: Iterable[str] = (),
    counts: bool = True,
) -> dict[str, Any]:
    """Coverage of a key (every version with live wraps, plus `vault_versions`), or one version.
    With `identity`, only wraps made as that identity (what removing its grant would break).
    `counts=False`: the wraps only (data keys, environments, windows), no rows/events/files counts."""
    now = rt.clock.now()
    with rt.transaction() as s:
        rec = get_vault_record(s, vault)
        filters: list[Any] = [DekWrap.vault_id == rec.id, DekWrap.key_name == key]
        if version is not None:
            filters.append(DekWrap.key_version == version)
        if identity is not None:
            filters.append(DekWrap.identity == identity)
        grouped, together = _grouped(rt, s, live_wraps(s, now, *filters), counts)
        vref = {"id": rec.id, "name": rec.name}
    by_version = {ver: view for (_v, _i, _k, ver), view in grouped.items()}
    names = set(by_version) | ({version} if version is not None else set(vault_versions))
    empty = _group_view(_Group(), {})
    versions = [{"version": v, **by_version.get(v, empty)} for v in sorted(names, key=_version_sort)]
    out: dict[str, Any] = {
        "vault": vref,
        "key": key,
        "covered": together["covered"],
        "versions": versions,
        "all_versions": together,
        "methods": METHODS,
        "at": iso(now),
    }
    if identity is not None:
        out["identity"] = identity
    return out


def env_coverage(rt: Runtime, env_ref: str) -> dict[str, Any]:
    """Every key version the environment's data depends on, with what depends on each."""
    now = rt.clock.now()
    with rt.transaction() as s:
        env = get_environment(s, env_ref)
        env_id = env.id
        environment = {"id": env.id, "name": env.name}
        tenant = tenant_ref(s, env.tenant_id)
        binding = {
            "mode": env.enc_mode,
            "vault": vault_ref(s, env.kek_vault_id),
            "key": env.kek_key_name,
            "version": env.kek_key_version,
        }
        grouped, _ = _grouped(rt, s, live_wraps(s, now, Dek.environment_id == env_id))
    keys = [
        {"vault": {"id": vid, "name": v}, "key": k, "version": ver, **view}
        for (v, vid, k, ver), view in sorted(
            grouped.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], _version_sort(kv[0][3]))
        )
    ]
    return {
        "environment": environment,
        "tenant": tenant,
        "binding": binding,
        "keys": keys,
        "methods": METHODS,
        "at": iso(now),
    }


def summary(view: dict[str, Any]) -> str:
    """One line for an error message or warning: what a (key or version) coverage view covers."""
    deks = view["data_keys"]
    t = view["totals"]
    envs = [e["name"] for e in view["environments"]]
    shown = ", ".join(envs[:5]) + (f", +{len(envs) - 5} more" if len(envs) > 5 else "")
    parts = [f"{deks['current']} current", f"{deks['pending']} pending", f"{deks['retained']} retained"]
    until = [w["until"] for w in view["retained_windows"] if w["until"]]
    if until:
        parts[-1] += f" until {max(until)}"
    return (
        f"{len(envs)} environment(s) ({shown}) of {len(view['tenants'])} tenant(s): "
        f"{deks['total']} data keys ({', '.join(parts)}); {t['rows']} rows, {t['events']} events, "
        f"{t['files']} files, {t['search_indexes']} search indexes, {t['lake_exports']} lake exports, "
        f"{t['backups']} backups"
    )
