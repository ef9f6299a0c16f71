"""A live client load with a byte-level check of every acknowledged write (tests and bench.soak).

A writer thread overwrites files (versioned, self-describing contents), deletes and re-creates
some, puts records and appends audit events; a reader thread reads them back while the load runs.
Every read must return exactly the bytes of a version at least as new as the last one acknowledged
before the read started (no stale read) and must not fail; `verify()` then checks that the
environment holds exactly the last acknowledged state: every file's bytes, every deleted file
absent, every record, every audit event exactly once.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from typing import Any

from keyshift.errors import KeyshiftError, NotFoundError
from keyshift.runtime import Runtime

KEPT = [f"live/k{i}.bin" for i in range(6)]  # always exist
DELETABLE = [f"live/d{i}.bin" for i in range(3)]  # deleted and re-created
BIG = "live/big.bin"  # several segments and SQL chunks; rewritten only while no move runs
BIG_SIZE = 3 * (1 << 20) + 5


def content(path: str, version: int, size: int | None = None) -> bytes:
    """Self-describing file contents: the header names path and version; the rest is derived."""
    head = f"{path}|v{version}|".encode()
    seed = hashlib.sha256(head).digest()
    n = size if size is not None else 200 + (int.from_bytes(seed[:2], "big") % 9000)
    body = (seed * (n // 32 + 1))[:n]
    return head + body


def parse_version(path: str, data: bytes) -> int | None:
    head = f"{path}|v".encode()
    if not data.startswith(head):
        return None
    end = data.index(b"|", len(head))
    version = int(data[len(head) : end])
    return version if content(path, version, len(data) - end - 1) == data else None


class LiveLoad:
    def __init__(self, rt: Runtime, env_id: str, *, seed: int = 1, pause: float = 0.002) -> None:
        self.rt, self.env_id, self.pause = rt, env_id, pause
        self.rng = random.Random(seed)
        self.version: dict[str, int] = {}  # last acknowledged version; -1 = deleted
        self.top: dict[str, int] = {}  # highest version ever written (writer thread only)
        self._deleted_at: dict[str, int] = {}  # the version a deleted path held
        self.rows: dict[str, Any] = {}
        self.events: dict[str, Any] = {}
        self.errors: list[str] = []
        self.counts = {"file_writes": 0, "deletes": 0, "row_writes": 0, "events": 0, "reads": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- set-up ------------------------------------------------------------------------------------
    def seed_files(self) -> None:
        """Version 0 of every path, written before the move under test."""
        from keyshift.stores.files import FileStore

        fs = FileStore(self.rt, self.env_id)
        for path in KEPT + DELETABLE:
            fs.put(path, content(path, 0))
            self.version[path] = self.top[path] = 0
        fs.put(BIG, content(BIG, 0, BIG_SIZE))
        self.version[BIG] = self.top[BIG] = 0

    def bump_all(self) -> None:
        """A newer version of every path and one deletion (e.g. after a migration, before a restore)."""
        from keyshift.stores.files import FileStore

        fs = FileStore(self.rt, self.env_id)
        for path in KEPT + DELETABLE:
            v = self.top[path] + 1
            fs.put(path, content(path, v))
            self.version[path] = self.top[path] = v
        fs.put(BIG, content(BIG, 1, BIG_SIZE))
        self.version[BIG] = self.top[BIG] = 1
        fs.delete(DELETABLE[0])
        self._deleted_at[DELETABLE[0]] = self.version[DELETABLE[0]]
        self.version[DELETABLE[0]] = -1

    # -- running -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._threads = [threading.Thread(target=self._writer), threading.Thread(target=self._reader)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _err(self, what: str, exc: BaseException | str) -> None:
        msg = exc if isinstance(exc, str) else f"{type(exc).__name__}: {getattr(exc, 'code', '')} {exc}"
        with self._lock:
            self.errors.append(f"{what}: {msg}")

    def _writer(self) -> None:
        from keyshift.stores.audit import AuditLog
        from keyshift.stores.files import FileStore
        from keyshift.stores.records import RecordStore

        fs, rs = FileStore(self.rt, self.env_id), RecordStore(self.rt, self.env_id)
        log = AuditLog(self.rt, self.env_id)
        i = 0
        while not self._stop.is_set():
            i += 1
            op = self.rng.random()
            try:
                if op < 0.45:
                    path = self.rng.choice(KEPT + DELETABLE)
                    v = self.top[path] + 1
                    self.top[path] = v  # versions only grow, across deletes too
                    fs.put(path, content(path, v))
                    with self._lock:
                        self.version[path] = v
                        self.counts["file_writes"] += 1
                elif op < 0.52:
                    path = self.rng.choice(DELETABLE)
                    if self.version.get(path, -1) >= 0:
                        fs.delete(path)
                        with self._lock:
                            self._deleted_at[path] = self.version[path]
                            self.version[path] = -1
                            self.counts["deletes"] += 1
                elif op < 0.8:
                    rid = f"live{i % 17}"
                    value = {"i": i}
                    rs.put("live", rid, value)
                    with self._lock:
                        self.rows[rid] = value
                        self.counts["row_writes"] += 1
                else:
                    body = {"live": i}
                    eid = log.append(body)
                    with self._lock:
                        self.events[eid] = body
                        self.counts["events"] += 1
            except BaseException as exc:  # any failure of an acknowledged-path write is a defect
                self._err(f"write #{i}", exc)
            time.sleep(self.pause)

    def _reader(self) -> None:
        from keyshift.stores.files import FileStore
        from keyshift.stores.records import RecordStore

        fs, rs = FileStore(self.rt, self.env_id), RecordStore(self.rt, self.env_id)
        rng = random.Random(self.rng.random())
        while not self._stop.is_set():
            path = rng.choice([*KEPT, *DELETABLE, BIG])
            with self._lock:
                floor = self.version.get(path, 0)
                floor_deleted = self._deleted_at.get(path, -1) if floor < 0 else -1
            try:
                data = fs.get(path)
            except NotFoundError:
                if path in KEPT:
                    self._err(f"read {path}", "not found")
                continue
            except BaseException as exc:  # any other failure is a defect too, and must not end the reader
                self._err(f"read {path}", exc)
                continue
            got = parse_version(path, data)
            with self._lock:
                self.counts["reads"] += 1
            if got is None:
                self._err(f"read {path}", f"{len(data)} bytes that are no version of the file")
            elif got < floor or (floor < 0 and got <= floor_deleted):
                self._err(f"read {path}", f"stale: version {got}, acknowledged {floor} before the read")
            rid = f"live{rng.randrange(17)}"
            with self._lock:
                want = self.rows.get(rid)
            try:
                rec = rs.get("live", rid)
            except NotFoundError:
                if want is not None:
                    self._err(f"read row {rid}", "not found")
                continue
            except BaseException as exc:
                self._err(f"read row {rid}", exc)
                continue
            if want is not None and rec["i"] < want["i"]:
                self._err(f"read row {rid}", f"stale: {rec.value} < {want}")
            time.sleep(self.pause)

    # -- the check -----------------------------------------------------------------------------------
    def verify(self, rt: Runtime | None = None) -> list[str]:
        """Byte-level: the environment holds exactly the last acknowledged state."""
        from keyshift.stores.audit import AuditLog
        from keyshift.stores.files import FileStore
        from keyshift.stores.records import RecordStore

        rt = rt or self.rt
        bad = list(self.errors)
        fs = FileStore(rt, self.env_id)
        listed = {i["path"] for i in fs.list("live/")}
        for path, v in sorted(self.version.items()):
            if v < 0:
                if path in listed:
                    bad.append(f"{path}: deleted but listed")
                try:
                    fs.get(path)
                    bad.append(f"{path}: deleted but readable")
                except NotFoundError:
                    pass
                continue
            try:
                data = fs.get(path)
            except KeyshiftError as exc:
                bad.append(f"{path}: {exc.code}")
                continue
            if data != content(path, v, BIG_SIZE if path == BIG else None):
                bad.append(f"{path}: holds version {parse_version(path, data)}, acknowledged {v}")
            if path not in listed:
                bad.append(f"{path}: not listed")
        rs = RecordStore(rt, self.env_id)
        for rid, value in self.rows.items():
            if rs.get("live", rid) != value:
                bad.append(f"row {rid}: not the acknowledged value")
        seen: dict[str, int] = {}
        for e in AuditLog(rt, self.env_id).query(limit=10_000):
            seen[e["id"]] = seen.get(e["id"], 0) + 1
            if e["id"] in self.events and e["event"] != self.events[e["id"]]:
                bad.append(f"event {e['id']}: altered")
        for eid in self.events:
            if seen.get(eid, 0) != 1:
                bad.append(f"event {eid}: seen {seen.get(eid, 0)} times")
        return bad

    def summary(self) -> str:
        c = self.counts
        return (
            f"{c['file_writes']} file writes, {c['deletes']} deletes, {c['row_writes']} record writes, "
            f"{c['events']} audit events, {c['reads']} reads"
        )
