"""`keyshift init`: create (or upgrade) a state home.

Creates the home directory and home.json, brings the state database schema to head, creates the
master key (HOME/master.key, 0600 — or a passphrase-derived key when KEYSHIFT_MASTER_PASSPHRASE is
set) and the platform vault (local, owner platform, 90-day soft delete, purge protection) holding
the platform KEK (AES-256) with a get/wrapKey/unwrapKey grant for the platform identity.
The home's SQLite files (state.db, audit.db — created here, empty, so the document store never
creates it under a looser umask) are 0600 and the file-store directory (HOME/files) 0700, also when
the home directory existed before; running `init` again tightens them in an older home.
Idempotent: running it again on an initialised home only upgrades the schema and fills in
whatever of the above is missing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from keyshift.clock import SystemClock
from keyshift.config import HOME_FILE, HomeInfo, Settings
from keyshift.db import schema
from keyshift.db.connect import open_engine, public_url, reachable
from keyshift.errors import AlreadyExistsError, ConflictError, NotFoundError, UsageError

INIT_PRINCIPAL = "system:init"


def init_home(
    home: str | Path,
    *,
    database_url: str | None = None,
    allow_fake_clock: bool = False,
    regions: list[str] | None = None,
    default_region: str | None = None,
) -> dict[str, object]:
    settings = Settings(home=Path(home), database_url=database_url)
    path = settings.home_path()
    created = not (path / HOME_FILE).exists()
    if not created:
        settings = settings.with_home(HomeInfo.load(path))
    url = settings.resolved_database_url()
    engine = open_engine(url)  # refuses a malformed URL before anything is written
    if created and not url.startswith("sqlite"):
        try:
            with reachable(url), engine.connect():  # nor record a URL that does not answer
                pass
        except BaseException:
            engine.dispose()
            raise
    if created:
        allowed = regions or list(settings.regions)
        default = default_region or (
            settings.default_region if settings.default_region in allowed else allowed[0]
        )
        if default not in allowed:
            raise UsageError(f"default region {default!r} is not one of the regions", code="invalid_region")
        HomeInfo.write(
            path,
            allow_fake_clock=allow_fake_clock,
            created_at=SystemClock().now().isoformat(),
            # Recorded so later commands need no --database-url; never with its password.
            database_url=public_url(database_url) if database_url else None,
            regions=regions,
            default_region=default if (regions or default_region) else None,
        )
        settings = settings.with_home(HomeInfo.load(path))
    private = _private_paths(settings, url)
    for f in private["files"]:
        _private_file(f)  # created 0600 before SQLite opens it, whatever the umask
    try:
        with reachable(url):
            schema.upgrade(engine)
            master = _ensure_master_key(path, engine)
    finally:
        engine.dispose()
    platform = _ensure_platform_vault(settings)
    for f in private["files"]:
        for extra in (
            f,
            f.with_name(f.name + "-wal"),
            f.with_name(f.name + "-shm"),
            f.with_name(f.name + "-journal"),
        ):
            _tighten(extra, 0o600)
    for d in private["dirs"]:
        d.mkdir(mode=0o700, exist_ok=True)
        _tighten(d, 0o700)
    return {
        "home": str(path),
        "created": created,
        "database": public_url(url),
        "database_recorded": HomeInfo.load(path).database_url is not None,
        "regions": list(settings.regions),
        "default_region": settings.default_region,
        "schema": schema.head_revision(),
        "allow_fake_clock": HomeInfo.load(path).allow_fake_clock,
        "master_key": master,
        **platform,
    }


def _private_paths(settings: Settings, url: str) -> dict[str, list[Path]]:
    """The home's own SQLite files (state database, document store) and file-store directory."""
    home = settings.home_path()
    files: list[Path] = []
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        files.append(Path(str(parsed.database)))
    if not settings.document_store_url:
        files.append(home / "audit.db")
    dirs = [] if settings.file_store_url else [home / "files"]
    return {"files": files, "dirs": dirs}


def _private_file(path: Path) -> None:
    """Create an empty file readable by its owner only (an empty file is a valid SQLite database)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # a concurrent init
        return
    os.close(fd)


def _tighten(path: Path, mode: int) -> None:
    """No group/other access on the home's state files and directories, even in a home that existed
    before `init` (created under a looser umask)."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if current & 0o077:
        os.chmod(path, current & mode)


def _ensure_master_key(path: Path, engine: Any) -> dict[str, Any]:
    from keyshift.db.models import LocalKey
    from keyshift.vaults import master_key

    if not master_key.exists(path):
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(LocalKey)).scalar_one()
        if stored:
            raise ConflictError(
                f"{path} has no master key but the database holds {stored} local vault key(s) sealed "
                "under one; restore the home's master.key/master.json instead of creating a new key",
                code="master_key_missing",
            )
    return master_key.create_master_key(path)


def _ensure_platform_vault(settings: Settings) -> dict[str, Any]:
    """Create the platform vault, its KEK and the platform identity's grant when missing."""
    from keyshift.control.vaults import create_local_vault
    from keyshift.runtime import Runtime
    from keyshift.vaults.base import ALL_PERMISSIONS, KeyNotFoundError, KeyType
    from keyshift.vaults.local import LocalVault
    from keyshift.vaults.registry import find_vault_record

    out: dict[str, Any] = {}
    # check_schema=False: the schema was brought to head a moment ago by this same call.
    with Runtime.open(
        settings=settings, clock=SystemClock(), principal=INIT_PRINCIPAL, check_schema=False
    ) as rt:
        name = settings.platform_vault
        try:
            find_vault_record(rt, name)
            out["platform_vault"] = {"name": name, "created": False}
        except NotFoundError:
            try:
                create_local_vault(rt, name, soft_delete_days=90, purge_protection=True, owner="platform")
                out["platform_vault"] = {"name": name, "created": True}
            except AlreadyExistsError:  # a concurrent init created it first
                out["platform_vault"] = {"name": name, "created": False}
        vault = rt.vault(name)
        assert isinstance(vault, LocalVault)
        key = settings.platform_key
        try:
            vault.describe(vault._ref(key))
            out["platform_key"] = {"name": key, "created": False}
        except KeyNotFoundError:
            try:
                vault.create_key(key, KeyType.AES, 256)
                out["platform_key"] = {"name": key, "type": "AES", "size": 256, "created": True}
            except AlreadyExistsError:
                out["platform_key"] = {"name": key, "created": False}
        identity = settings.platform_identity
        if vault.check_access(vault._ref(key), identity) != ALL_PERMISSIONS:
            vault.grant(key, identity, ALL_PERMISSIONS)
            out["platform_grant"] = {"identity": identity, "created": True}
        else:
            out["platform_grant"] = {"identity": identity, "created": False}
    return out
