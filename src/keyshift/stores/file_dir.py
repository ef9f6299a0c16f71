"""The directory file store (embedded default): one ciphertext file per path under `home/files`.

Mapping (injective for every path `stores.files.validate_path` accepts):
* the last segment `s` of a path is the file `s.ksf`;
* every other segment `s` is the directory `s`, except that a segment ending in `.ksf` followed by
  zero or more `~` gets one more `~` (`a.ksf/b` -> directory `a.ksf~`, file `b.ksf`). So no
  directory name ever ends in `.ksf`, and the file of `coll` and the directory of `coll.ksf/...`
  can never meet.
* temp files live in `<root>/.tmp/`, a directory no path maps to (the first level of the root
  holds only environment namespaces, which never start with a dot). A write goes to a temp file
  (0600), is fsynced, then renamed into place, so a reader sees the old or the new file. Temp
  files orphaned by a killed writer are removed by `maintenance run` once older than a safe age.

Homes written before this mapping (layout 1: directories named after the raw segment) are brought
to layout 2 the first time the store is opened: the few directories whose name ends in `.ksf`/
`.ksf~...` get their `~`, following a journal so a crash in the middle resumes instead of renaming
twice. The marker `<root>/.layout` records the layout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import BinaryIO

from keyshift.errors import UsageError
from keyshift.stores.file_types import FileInfo, Keep, Produce, plaintext_size

SUFFIX = ".ksf"
TMP_DIR = ".tmp"
MARKER = ".layout"
LAYOUT = "keyshift-files 2"
LEGACY_TMP = re.compile(r"^\.tmp-[0-9a-f]{16}\.part$")
_ESCAPED = re.compile(r"\.ksf~*$")
TEMP_MAX_AGE = 6 * 3600.0  # a temp file untouched this long has no live writer

_ready: set[str] = set()


def dir_name(segment: str) -> str:
    return segment + "~" if _ESCAPED.search(segment) else segment


def segment_of_dir(name: str) -> str:
    return name[:-1] if re.search(r"\.ksf~+$", name) else name


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryFiles:
    name = "file_storage"

    def __init__(self, root: Path) -> None:
        self.root = root
        ensure_layout(root)

    @property
    def tmp_dir(self) -> Path:
        return self.root / TMP_DIR

    def target_path(self, env_id: str, path: str) -> Path:
        """Where the object of a (validated) path lives on disk; refuses a path escaping the root."""
        if not env_id or env_id.startswith("."):
            raise UsageError(f"invalid file namespace {env_id!r}", code="invalid_path")
        base = (self.root / env_id).resolve()
        parts = path.split("/")
        target = base.joinpath(*(dir_name(p) for p in parts[:-1]), parts[-1] + SUFFIX)
        # Defence in depth: validated paths cannot escape, but check the result anyway.
        if os.path.commonpath([base, target.resolve()]) != str(base):
            raise UsageError(f"path {path!r} escapes the file store", code="invalid_path")
        return target

    def _temp(self) -> tuple[Path, int]:
        self.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.tmp_dir / f"{secrets.token_hex(12)}.part"
        return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, env_id: str, path: str, produce: Produce, dek_hex: str) -> int:
        target = self.target_path(env_id, path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp, fd = self._temp()
        try:
            with os.fdopen(fd, "wb", buffering=0) as raw:
                size = produce(raw)  # type: ignore[arg-type]
                os.fsync(raw.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return size

    def write_if_absent(
        self, env_id: str, path: str, produce: Produce, dek_hex: str, keep: Keep | None = None
    ) -> int | None:
        """Put-if-absent (a migration's copy): hard-links the finished temp file into place, which
        fails if a client wrote the path meanwhile. If `keep()` then says the copy is no longer
        wanted (its source was deleted during the copy), the copy is taken back — only if the path
        still holds our very file. Returns None when nothing was stored."""
        target = self.target_path(env_id, path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp, fd = self._temp()
        try:
            with os.fdopen(fd, "wb", buffering=0) as raw:
                size = int(produce(raw))  # type: ignore[arg-type]
                os.fsync(raw.fileno())
                ours = os.fstat(raw.fileno()).st_ino if keep is not None else 0
            try:
                os.link(tmp, target)
            except FileExistsError:
                return None
            _fsync_dir(target.parent)
            if keep is not None and not keep():
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(target).st_ino == ours:
                        target.unlink()
                return None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return size

    def open(self, env_id: str, path: str) -> BinaryIO | None:
        try:
            return open(self.target_path(env_id, path), "rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def exists(self, env_id: str, path: str) -> bool:
        """Whether the path holds a file (a stat: nothing is opened or read)."""
        return self.target_path(env_id, path).is_file()

    def delete(self, env_id: str, path: str) -> bool:
        target = self.target_path(env_id, path)
        try:
            target.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        base = (self.root / env_id).resolve()
        parent = target.parent
        while parent != base:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return True

    def list(self, env_id: str, prefix: str) -> list[FileInfo]:
        base = self.root / env_id
        out: list[FileInfo] = []
        for dirpath, _dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            segs = [] if rel == "." else [segment_of_dir(d) for d in rel.split(os.sep)]
            for f in files:
                if not f.endswith(SUFFIX):
                    continue
                p = "/".join([*segs, f[: -len(SUFFIX)]])
                if p.startswith(prefix):
                    out.append(FileInfo(p, plaintext_size(os.path.getsize(os.path.join(dirpath, f)))))
        return sorted(out, key=lambda i: i.path)

    def clean_temp(self, max_age: float = TEMP_MAX_AGE) -> dict[str, int]:
        """Remove temp files no writer touched for `max_age` seconds: those in `.tmp/`, and those a
        layout-1 writer left beside the files (`.tmp-<16 hex>.part`, never a path's file)."""
        cutoff = time.time() - max_age
        removed = kept = 0
        candidates: list[Path] = []
        if self.tmp_dir.is_dir():
            candidates += [p for p in self.tmp_dir.iterdir() if p.name.endswith(".part")]
        for top in self.root.iterdir() if self.root.is_dir() else []:
            if top.name.startswith(".") or not top.is_dir():
                continue
            for dirpath, _dirs, files in os.walk(top):
                candidates += [Path(dirpath, f) for f in files if LEGACY_TMP.match(f)]
        for p in candidates:
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if not p.is_file() or p.is_symlink():
                continue
            if st.st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                removed += 1
            else:
                kept += 1
        return {"removed": removed, "recent_kept": kept}


# -- layout 1 -> 2 ---------------------------------------------------------------------------------


def ensure_layout(root: Path) -> None:
    key = str(root)
    if key in _ready:
        return
    if (root / MARKER).is_file():
        _ready.add(key)
        return
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / TMP_DIR).mkdir(exist_ok=True, mode=0o700)
    with open(root / TMP_DIR / "layout.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not (root / MARKER).is_file():
            _upgrade(root)
            tmp = root / TMP_DIR / f"layout-{secrets.token_hex(4)}.part"
            tmp.write_text(LAYOUT + "\n")
            os.replace(tmp, root / MARKER)
            _fsync_dir(root)
    _ready.add(key)


def _upgrade(root: Path) -> None:
    """Rename layout-1 directories whose name would now be read as escaped (journaled)."""
    plan_file, done_file = root / TMP_DIR / "layout-plan.json", root / TMP_DIR / "layout-done"
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text())
    else:
        plan = []
        for top in sorted(root.iterdir()):
            if top.name.startswith(".") or not top.is_dir():
                continue
            for dirpath, dirs, _files in os.walk(top, topdown=False):
                # most tildes first, so `a.ksf~` moves to `a.ksf~~` before `a.ksf` takes `a.ksf~`
                for d in sorted(dirs, key=lambda n: (-len(n), n)):
                    if _ESCAPED.search(d):
                        old = Path(dirpath, d).relative_to(root)
                        plan.append([str(old), str(old.parent / (d + "~"))])
        if not plan:
            return
        tmp = root / TMP_DIR / "layout-plan.part"
        tmp.write_text(json.dumps(plan))
        os.replace(tmp, plan_file)
    done = len(done_file.read_text().split()) if done_file.is_file() else 0
    with open(done_file, "a") as progress:
        for i, (old, new) in enumerate(plan):
            if i < done:
                continue
            src, dst = root / old, root / new
            if not dst.exists():  # else done before a crash (a planned name is free until its step)
                os.rename(src, dst)
            progress.write(f"{i}\n")
            progress.flush()
            os.fsync(progress.fileno())
    plan_file.unlink()
    done_file.unlink()
