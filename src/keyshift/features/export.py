"""Customer export: an environment's data as plaintext files, through the normal data plane.

`export_environment(rt, env, out)` writes the layout that tools/keyshift_decrypt.py (the reference
decryptor, which needs no Keyshift) writes too, byte for byte:

    OUT/manifest.json          environment id/name/tenant name, counts (no timestamps, no paths)
    OUT/records/TABLE.jsonl    {"id", "type": "json"|"bytes", "value", "version"} per record, by id
    OUT/audit/events.jsonl     {"at", "event", "id"} per event, by time then id
    OUT/files/PATH             each file's plaintext

Everything is read through the stores (records, audit, files), so every value authenticates on the
way out and a disabled or locked environment is refused (exit 7). Output goes to a temporary
directory beside OUT (same file system, mode 0700) that is renamed to OUT only when complete; a
failure removes it, so no partial export is ever left looking complete. OUT must not exist or be an
empty directory. The export (or its refusal) is recorded in the admin audit trail.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from keyshift.control import audit_trail
from keyshift.db.models import Tenant
from keyshift.errors import ConflictError, KeyshiftError
from keyshift.runtime import Runtime
from keyshift.stores.audit import MAX_LIMIT as AUDIT_PAGE
from keyshift.stores.envstate import env_states
from keyshift.stores.files import READ_CHUNK
from keyshift.stores.service import EnvironmentData

FORMAT = "keyshift-export/v1"
ACTION = "env.export"


def dumps(obj: Any) -> str:
    """One canonical JSON line (sorted keys, no spaces, UTF-8 text)."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def record_line(record_id: str, version: int, value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        encoded = base64.b64encode(bytes(value)).decode("ascii")
        return dumps({"id": record_id, "type": "bytes", "value": encoded, "version": version})
    return dumps({"id": record_id, "type": "json", "value": value, "version": version})


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConflictError(f"{out} exists and is not an empty directory", code="export_target_exists")


def _write_lines(path: Path, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def _records(data: EnvironmentData, work: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    (work / "records").mkdir()
    for table in sorted(t["table"] for t in data.records.tables()):
        rows = sorted((r.id, record_line(r.id, r.version, r.value)) for r in data.records.iter_all(table))
        _write_lines(work / "records" / f"{table}.jsonl", [line for _, line in rows])
        counts[table] = len(rows)
    return counts


def _events(data: EnvironmentData) -> list[str]:
    """Every event, ordered by time then id. Pages by time: a page's last instant is re-read whole."""
    out: list[str] = []
    since: datetime | None = None
    while True:
        page = data.audit.query(since=since, limit=AUDIT_PAGE)
        stamps = [datetime.fromisoformat(e["at"]) for e in page]
        full = len(page) == AUDIT_PAGE
        cut = stamps[-1] if full else None
        if full and stamps[0] == cut:
            raise ConflictError(
                f"more than {AUDIT_PAGE} audit events share one timestamp; cannot page through them",
                code="export_unpageable",
            )
        done = [(at, e["id"], e) for at, e in zip(stamps, page, strict=True) if cut is None or at < cut]
        out.extend(dumps({"at": e["at"], "event": e["event"], "id": e["id"]}) for _, _, e in sorted(done))
        if not full:
            return out
        since = cut


def _files(data: EnvironmentData, work: Path) -> tuple[int, int]:
    root = work / "files"
    root.mkdir()
    count = total = 0
    for item in data.files.list():
        path = item["path"]  # validated by the store: relative, no '.', '..' or empty segment
        target = root.joinpath(*path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with data.files.open(path) as src, open(target, "wb") as dst:
            while chunk := src.read(READ_CHUNK):
                dst.write(chunk)
                total += len(chunk)
        count += 1
    return count, total


def _write(rt: Runtime, data: EnvironmentData, tenant_id: str, work: Path) -> dict[str, Any]:
    records = _records(data, work)
    (work / "audit").mkdir()
    events = _events(data)
    _write_lines(work / "audit" / "events.jsonl", events)
    files, file_bytes = _files(data, work)
    with rt.transaction() as s:
        tenant = s.get(Tenant, tenant_id)
        tenant_name = tenant.name if tenant is not None else tenant_id
    manifest = {
        "audit_events": len(events),
        "environment": {"id": data.id, "name": data.name, "tenant": tenant_name},
        "file_bytes": file_bytes,
        "files": files,
        "format": FORMAT,
        "records": records,
    }
    _write_lines(work / "manifest.json", [dumps(manifest)])
    return manifest


def export_environment(rt: Runtime, env_ref: str, out: str | Path) -> dict[str, Any]:
    """Export one environment's records, audit events and files as plaintext into `out`."""
    target = Path(out).expanduser().absolute()
    view = env_states(rt).resolve(env_ref)
    audit = {"target_type": "environment", "target_id": view.id, "tenant_id": view.tenant_id}
    work: Path | None = None
    try:
        _check_out(target)
        data = EnvironmentData(rt, view.id)
        data.check()  # disabled or locked: exit 7 before anything is written
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        manifest = _write(rt, data, view.tenant_id, work)
        _check_out(target)  # still free: nobody wrote there meanwhile
        if target.exists():
            target.rmdir()
        os.replace(work, target)
        work = None
    except KeyshiftError as err:
        audit_trail.record_failure(rt, ACTION, err, **audit)
        raise
    except OSError as exc:
        failed = ConflictError(
            f"could not write the export: {exc.strerror or type(exc).__name__}", code="export_write_failed"
        )
        audit_trail.record_failure(rt, ACTION, failed, **audit)
        raise failed from None
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    counts = {k: manifest[k] for k in ("audit_events", "files", "file_bytes")}
    with rt.transaction() as s:
        audit_trail.record(
            rt, s, ACTION, **audit, details={"out": str(target), "records": manifest["records"], **counts}
        )
    return {**manifest, "out": str(target)}
