"""Run the reference decryptor (tools/keyshift_decrypt.py) the way a customer would: as its own
process, where importing `keyshift` is impossible, and compare its output with the SDK's reads."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from keyshift.runtime import Runtime
from keyshift.stores.audit import AuditLog
from keyshift.stores.files import FileStore
from keyshift.stores.records import RecordStore

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "keyshift_decrypt.py"

# The tool runs with every `keyshift` import refused (the editable install would otherwise make the
# package importable from any interpreter of this venv), and with src/ off sys.path.
_RUNNER = """
import runpy, sys
class NoKeyshift:
    def find_spec(self, name, path=None, target=None):
        if name == "keyshift" or name.startswith("keyshift."):
            raise ImportError("the reference decryptor must not import keyshift")
        return None
sys.meta_path.insert(0, NoKeyshift())
sys.path = [p for p in sys.path if not p.rstrip("/").endswith("/src")]
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def decrypt(
    home: Path, env: str, out: Path, *, db_url: str | None = None, extra: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-c", _RUNNER, str(TOOL), env, "--home", str(home), "--out", str(out)]
    if db_url:
        args += ["--database-url", db_url]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEYSHIFT_")}
    return subprocess.run(
        [*args, *(extra or [])], capture_output=True, text=True, env=environ, timeout=120, check=False
    )


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative POSIX path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_matches_sdk(rt: Runtime, env_id: str, out: Path) -> dict[str, Any]:
    """The decryptor's output holds exactly what the SDK reads: every record, event and file."""
    manifest = json.loads((out / "manifest.json").read_text())
    store = RecordStore(rt, env_id)
    tables = {t["table"]: t["records"] for t in store.tables()}
    assert manifest["records"] == tables
    for table in tables:
        lines = [json.loads(x) for x in (out / "records" / f"{table}.jsonl").read_text().splitlines()]
        sdk = {r.id: (r.value, r.version) for r in store.iter_all(table)}
        assert [x["id"] for x in lines] == sorted(sdk)
        for x in lines:
            value = base64.b64decode(x["value"]) if x["type"] == "bytes" else x["value"]
            assert (value, x["version"]) == sdk[x["id"]]
    events = AuditLog(rt, env_id).query(limit=10_000)
    lines = [json.loads(x) for x in (out / "audit" / "events.jsonl").read_text().splitlines()]
    assert sorted((e["id"], e["at"], json.dumps(e["event"])) for e in events) == sorted(
        (x["id"], x["at"], json.dumps(x["event"])) for x in lines
    )
    fs = FileStore(rt, env_id)
    listed = [f["path"] for f in fs.list()]
    assert {p: fs.get(p) for p in listed} == {
        k[len("files/") :]: v for k, v in tree(out).items() if k.startswith("files/")
    }
    assert manifest["files"] == len(listed) and manifest["audit_events"] == len(events)
    return manifest
