"""Audit and file moves of a BYOK -> customer-key link vs the bare thing (`python -m bench moves`).

A BYOK environment keeps its audit events and files in the SQL layout; linking it to a customer
key moves both out (audit -> document store, files -> file storage: the directory store and S3
through moto's HTTP server in its own process), re-encrypted under fresh DEKs. Compared, in
interleaved trials (order alternating), each on a fresh copy of one filled template home (SQLite):

* Keyshift: the whole link job in a forked worker process; the time inside its audit and file
  move batches is summed per kind (the job's fixed phases — rewrap, cutover, settle — are left out).
* the plain copy, the bare thing of the same shape in a forked process: audit — events read from
  SQL in batches of the move's batch size (keyset on seq), AES-GCM (pyca) twice per event (a
  decrypt costs what an encrypt does), one insert transaction per batch into a document table of
  the same schema; files — each file's chunks read from SQL as Keyshift reads them, written to a
  temp file, fsynced, renamed (directory) or uploaded with boto3 (8 MiB multipart, as Keyshift).
* peak RSS growth of each process during its copy (VmHWM - VmRSS at its start): a file larger
  than any buffer must stream, so this stays bounded whatever the largest file.

Sizes (environment variables; `make bench` runs the small defaults):
KEYSHIFT_BENCH_MOVE_EVENTS (default 5,000; issue size 100,000), KEYSHIFT_BENCH_MOVE_FILES (small
files, default 200; issue size 10,000), KEYSHIFT_BENCH_MOVE_BIG (files of KEYSHIFT_BENCH_MOVE_BIG_MIB
MiB: default 1 of 24; issue size 2 of 110), KEYSHIFT_BENCH_MOVE_TRIALS (default 2),
KEYSHIFT_BENCH_MOVE_STORES ("directory,s3").
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Report

REPO = Path(__file__).resolve().parent.parent
EVENTS = int(os.environ.get("KEYSHIFT_BENCH_MOVE_EVENTS", "5000"))
FILES = int(os.environ.get("KEYSHIFT_BENCH_MOVE_FILES", "200"))
BIG = int(os.environ.get("KEYSHIFT_BENCH_MOVE_BIG", "1"))
BIG_MIB = int(os.environ.get("KEYSHIFT_BENCH_MOVE_BIG_MIB", "24"))
TRIALS = int(os.environ.get("KEYSHIFT_BENCH_MOVE_TRIALS", "2"))
STORES = tuple(os.environ.get("KEYSHIFT_BENCH_MOVE_STORES", "directory,s3").split(","))
ENV = "mv"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
PART = 8 << 20


class _Random(io.RawIOBase):
    """`size` random bytes, produced 1 MiB at a time (a big file never held in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left, 1 << 20)
        memoryview(b)[:n] = os.urandom(n)
        self.left -= n
        return n


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def _reset_hwm() -> None:
    """Start the peak-RSS mark from now (Linux: writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


# -- the template home ----------------------------------------------------------------------------


def build_template(root: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from keyshift.bootstrap import init_home
    from keyshift.control import tenants
    from keyshift.runtime import Runtime
    from keyshift.stores.audit import AuditLog
    from keyshift.stores.files import FileStore
    from migrate.helpers import byok_world, customer_key, make_policy

    home = root / "template"
    init_home(home)
    t0 = time.perf_counter()
    total = 0
    with Runtime.open(home=home, principal="operator:bench") as rt:
        w = byok_world(rt, root, tenant="mvt", envs=(ENV,))
        env_id = w["envs"][ENV]
        log = AuditLog(rt, env_id)
        for i in range(EVENTS):
            log.append({"i": i, "who": "alice", "action": "record.read", "target": f"accounts/a{i:07d}"})
        fs = FileStore(rt, env_id)
        for i in range(FILES):
            body = os.urandom(512 + (i * 7919) % (64 << 10))  # 0.5-64 KiB
            fs.put(f"docs/{i % 50:02d}/f{i:06d}.bin", body)
            total += len(body)
        for i in range(BIG):
            fs.put(f"big/blob{i}.bin", io.BufferedReader(_Random(BIG_MIB << 20), 1 << 20))  # type: ignore[arg-type]
            total += BIG_MIB << 20
        vault, key = customer_key(rt, "mv-kv", "mv-cmk")
        make_policy(rt, "mvt", "mv-pol", vault, key)
        tenants.byok_flag_remove(rt, "mvt", ticket="BENCH-1")
    return {"home": home, "env_id": env_id, "bytes": total, "fill": time.perf_counter() - t0}


# -- moto's S3 server in its own process ---------------------------------------------------------


class Moto:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until = time.monotonic() + 30
        while time.monotonic() < until:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError("moto's server did not start")

    def bucket(self) -> str:
        import boto3

        name = f"ks-bench-{secrets.token_hex(4)}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(Bucket=name)
        return name

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the two sides, each in a forked process ------------------------------------------------------


def _open(home: Path, s3: tuple[str, str] | None) -> Any:
    from keyshift.runtime import Runtime

    rt = Runtime.open(home=home, principal="operator:bench")
    if s3 is not None:
        bucket, endpoint = s3
        rt.settings = rt.settings.model_copy(
            update={"file_store_url": f"s3://{bucket}/files", "file_store_endpoint": endpoint}
        )
    return rt


def keyshift_side(home: Path, s3: tuple[str, str] | None) -> dict[str, Any]:
    from keyshift.jobs.runner import Worker
    from keyshift.migrate import moves
    from keyshift.migrate.link import start_link

    rt = _open(home, s3)
    spent = {"audit": 0.0, "files": 0.0}
    real = moves.run_batch

    def timed(rt_: Any, ctx: Any) -> None:
        t0 = time.perf_counter()
        try:
            real(rt_, ctx)
        finally:
            spent[ctx.spec["kind"]] += time.perf_counter() - t0

    moves.run_batch = timed  # type: ignore[assignment]
    rss0, _ = _rss()
    _reset_hwm()
    t0 = time.perf_counter()
    view = start_link(rt, "mv-pol", ENV)
    state = Worker(rt, poll_seconds=0.005).run_job(view["id"])
    job = time.perf_counter() - t0
    _, hwm = _rss()
    rt.close()
    if state != "succeeded":
        raise RuntimeError(f"link ended {state}")
    return {"audit": spent["audit"], "files": spent["files"], "job": job, "rss": max(0, hwm - rss0)}


def plain_side(home: Path, env_id: str, s3: tuple[str, str] | None) -> dict[str, Any]:
    from sqlalchemy import insert

    from keyshift.db.engine import make_engine
    from keyshift.stores.docstore import audit_events, metadata

    rt = _open(home, None)
    rss0, _ = _rss()
    _reset_hwm()
    t0 = time.perf_counter()
    engine = make_engine(f"sqlite:///{home / 'plain-audit.db'}")
    metadata.create_all(engine)
    _plain_audit(rt, env_id, engine, insert(audit_events))
    audit = time.perf_counter() - t0
    t1 = time.perf_counter()
    _plain_files(rt, env_id, home / "plain-files", s3)
    files = time.perf_counter() - t1
    _, hwm = _rss()
    engine.dispose()
    rt.close()
    return {"audit": audit, "files": files, "rss": max(0, hwm - rss0)}


def _plain_audit(rt: Any, env_id: str, engine: Any, ins: Any) -> None:
    import base64

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from sqlalchemy import select

    from keyshift.db.models import DataAuditRow as A
    from keyshift.migrate.moves import AUDIT_BATCH

    aes = AESGCM(AESGCM.generate_key(256))
    after = -1
    while True:
        with rt.transaction() as s:
            rows = s.execute(
                select(A.seq, A.event_id, A.at, A.payload)
                .where(A.environment_id == env_id, A.seq > after)
                .order_by(A.seq)
                .limit(AUDIT_BATCH)
            ).all()
        if not rows:
            return
        after = rows[-1][0]
        docs = []
        for _seq, eid, at, payload in rows:
            ad = eid.encode()
            once = aes.encrypt(os.urandom(12), bytes(payload), ad)  # stands in for the decrypt
            blob = aes.encrypt(os.urandom(12), once[: len(payload)], ad)
            docs.append(
                {
                    "environment_id": env_id,
                    "event_id": eid,
                    "at": at,
                    "doc": {"v": 1, "dek": "00" * 16, "ct": base64.b64encode(blob).decode("ascii")},
                }
            )
        with engine.begin() as conn:
            conn.execute(ins, docs)


class _Chunks(io.RawIOBase):
    """A file's ciphertext chunks read from SQL one short query at a time (as Keyshift reads)."""

    def __init__(self, rt: Any, file_id: str) -> None:
        self.rt, self.file_id, self.seq, self.buf, self.pos = rt, file_id, 0, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        from sqlalchemy import select

        from keyshift.db.models import DataFileChunk as C

        if self.pos >= len(self.buf):
            with self.rt.transaction() as s:
                data = s.execute(
                    select(C.data).where(C.file_id == self.file_id, C.seq == self.seq)
                ).scalar_one_or_none()
            if data is None:
                return 0
            self.buf, self.pos, self.seq = bytes(data), 0, self.seq + 1
        n = min(len(b), len(self.buf) - self.pos)
        memoryview(b)[:n] = self.buf[self.pos : self.pos + n]
        self.pos += n
        return n


def _plain_files(rt: Any, env_id: str, out: Path, s3: tuple[str, str] | None) -> None:
    from sqlalchemy import select

    from keyshift.db.models import DataFile as F

    with rt.transaction() as s:
        files = s.execute(select(F.path, F.file_id).where(F.environment_id == env_id).order_by(F.path)).all()
    client = transfer = None
    if s3 is not None:
        import boto3
        from boto3.s3.transfer import TransferConfig

        client = boto3.client("s3", endpoint_url=s3[1], region_name="us-east-1")
        transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, use_threads=False)
    out.mkdir(exist_ok=True)
    for i, (path, file_id) in enumerate(files):
        src = io.BufferedReader(_Chunks(rt, file_id), 1 << 20)
        if client is not None:
            client.upload_fileobj(src, s3[0], f"plain/{env_id}/{path}", Config=transfer)  # type: ignore[index]
            continue
        tmp, target = out / f".tmp-{i}", out / f"f{i:06d}"
        with open(tmp, "wb", buffering=0) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            os.fsync(dst.fileno())
        os.replace(tmp, target)


def _forked(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def main() -> None:
        try:
            child.send(("ok", fn(*args)))
        except BaseException as exc:
            child.send(("error", f"{type(exc).__name__}: {exc}"))
        os._exit(0)

    proc = ctx.Process(target=main)
    proc.start()
    status, value = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(value)
    return value  # type: ignore[no-any-return]


# -- the report ------------------------------------------------------------------------------------


def run(report: Report) -> None:
    os.environ.setdefault("KEYSHIFT_STATE_REFRESH_SECONDS", "0.2")  # the settle phase's wait
    for k, v in AWS.items():
        os.environ.setdefault(k, v)
    root = Path(tempfile.mkdtemp(prefix="keyshift-bench-moves-"))
    moto: Moto | None = None
    try:
        tpl = build_template(root)
        mib = tpl["bytes"] / (1 << 20)
        for store in STORES:
            s3 = None
            if store == "s3":
                moto = moto or Moto()
            res: dict[str, list[dict[str, Any]]] = {"plain": [], "keyshift": []}
            for trial in range(TRIALS):
                home = root / f"{store}-{trial}"
                shutil.copytree(tpl["home"], home)
                s3 = (moto.bucket(), moto.endpoint) if moto is not None and store == "s3" else None
                order = ("plain", "keyshift") if trial % 2 == 0 else ("keyshift", "plain")
                for side in order:
                    if side == "plain":
                        res["plain"].append(_forked(plain_side, home, tpl["env_id"], s3))
                    else:
                        res["keyshift"].append(_forked(keyshift_side, home, s3))
                shutil.rmtree(home, ignore_errors=True)
            _report(report, store, tpl, mib, res)
    finally:
        if moto is not None:
            moto.close()
        shutil.rmtree(root, ignore_errors=True)


def _report(report: Report, store: str, tpl: dict[str, Any], mib: float, res: dict[str, Any]) -> None:
    plain, ks = res["plain"], res["keyshift"]
    section = report.section(
        f"moves: BYOK link, audit -> document store, files -> {store}",
        f"{EVENTS:,} events, {FILES:,} small files + {BIG} of {BIG_MIB} MiB ({mib:,.0f} MiB); "
        f"{len(ks)} interleaved trials, median, ratio spread per trial; plain = the bare copy "
        f"(see bench/bench_moves.py); template filled in {tpl['fill']:.0f} s",
    )
    section.add_rounds(
        "audit events/s",
        "plain copy (SQL read, AES-GCM x2, batch insert)",
        [EVENTS / r["audit"] for r in plain],
    )
    section.add_rounds(
        "audit events/s",
        "Keyshift move_audit batches",
        [EVENTS / r["audit"] for r in ks],
        [EVENTS / r["audit"] for r in plain],
        note=f"whole job median {sorted(r['job'] for r in ks)[len(ks) // 2]:.1f} s",
    )
    n = FILES + BIG
    section.add_rounds(
        "files: MiB/s",
        "plain copy (chunks read, " + ("boto3 upload)" if store == "s3" else "temp file + fsync + rename)"),
        [mib / r["files"] for r in plain],
        unit="MiB/s",
        note=f"{n:,} files",
    )
    section.add_rounds(
        "files: MiB/s",
        "Keyshift move_files batches",
        [mib / r["files"] for r in ks],
        [mib / r["files"] for r in plain],
        unit="MiB/s",
        note=f"{n / sorted(r['files'] for r in ks)[len(ks) // 2]:,.0f} files/s",
    )
    for label, rows in (("plain copy process", plain), ("Keyshift worker process", ks)):
        section.add(
            "peak RSS growth during the copy (lower is better)",
            label,
            max(r["rss"] for r in rows),
            "B",
            baseline=rows is plain,
            note=f"largest file {BIG_MIB if BIG else 0} MiB; max over trials",
        )
