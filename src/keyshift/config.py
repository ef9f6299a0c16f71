"""Settings: one pydantic-settings class, read from KEYSHIFT_* environment variables.

The state home holds `home.json` (written by `keyshift init`), the SQLite state database by
default, the local vault master key file, the embedded document store and the file storage.

`home.json` also records the deployment choices made at `keyshift init`: the state database URL
(without its password: give that through PGPASSWORD / ~/.pgpass, or pass the full URL again), the
regions and the default region. A value given explicitly (option or KEYSHIFT_* variable) wins
over the recorded one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from keyshift.errors import ConflictError, UsageError

HOME_FILE = "home.json"
HOME_FORMAT = 1
DEFAULT_REGIONS = (
    *("eu", "us", "uk", "ca", "apac", "au", "jp", "in"),
    *("europe", "unitedstates", "unitedkingdom", "canada", "asia", "australia", "japan", "india"),
    *("france", "germany", "switzerland", "norway", "korea", "southamerica", "southafrica", "uae"),
    *("singapore", "brazil", "italy", "poland", "sweden", "spain", "mexico", "israel"),
)
REGION_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")


def parse_regions(text: str) -> list[str]:
    """`europe,unitedstates` -> ["europe", "unitedstates"]; UsageError for a malformed name."""
    regions = [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in regions if not REGION_RE.match(r)]
    if not regions or bad:
        raise UsageError(
            f"invalid region list {text!r}: comma-separated names of lower-case letters, digits and '-'",
            code="invalid_region",
        )
    return list(dict.fromkeys(regions))


class Settings(BaseSettings):
    """Everything an operator can set. Unset URLs fall back to embedded defaults in the home."""

    model_config = SettingsConfigDict(env_prefix="KEYSHIFT_", extra="ignore")

    home: Path = Path("~/.keyshift")
    database_url: str | None = None
    document_store_url: str | None = None
    file_store_url: str | None = None
    # Endpoint of an S3-compatible file store (`file_store_url = "s3://bucket/prefix"`); unset = AWS.
    file_store_endpoint: str | None = None
    platform_name: str = "Keyshift"
    default_region: str = "eu"
    # Regions environments and policies may be placed in (JSON list in KEYSHIFT_REGIONS, or
    # `keyshift init --regions a,b,c` recorded in the home). Short codes and geography names.
    regions: list[str] = list(DEFAULT_REGIONS)
    # Unwrapped-DEK cache bounds.
    dek_cache_max_age_seconds: float = 300.0
    dek_cache_max_uses: int = 1_000_000
    dek_cache_max_bytes: int = 1 << 34
    # Revocation: environments of a policy whose key became unusable are disabled within this bound.
    revocation_bound_seconds: float = 60.0
    # A vault that cannot be reached for longer than this counts as revoked.
    vault_grace_seconds: float = 30.0
    health_interval_seconds: float = 30.0
    # How stale a process's view of an environment's state (enabled/disabled/locked) may get.
    state_refresh_seconds: float = 1.0
    # Retention windows (days).
    byok_retention_days: int = 28
    unlink_block_days: int = 7
    backup_retention_days: int = 30
    # Lifecycle watch (control/lifecycle.py): warn this many days before a key version expires or a
    # key's scheduled deletion; warn when the current version is older than key_rotation_days.
    key_warning_days: int = 30
    key_rotation_days: int | None = None

    # Well-known names created by `keyshift init`.
    platform_vault: str = "platform"
    platform_key: str = "platform-kek"
    platform_identity: str = "keyshift-platform"

    def home_path(self) -> Path:
        return self.home.expanduser().resolve()

    def with_home(self, home: HomeInfo) -> Settings:
        """These settings with the home's recorded choices filled in where nothing was given."""
        update: dict[str, object] = {}
        if home.database_url and not self.database_url:
            update["database_url"] = home.database_url
        if home.regions and "regions" not in self.model_fields_set:
            update["regions"] = list(home.regions)
        if home.default_region and "default_region" not in self.model_fields_set:
            update["default_region"] = home.default_region
        return self.model_copy(update=update) if update else self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_path() / 'state.db'}"


@dataclass(frozen=True)
class HomeInfo:
    """What `keyshift init` recorded about a home."""

    path: Path
    allow_fake_clock: bool
    created_at: str
    database_url: str | None = None  # recorded without a password
    regions: list[str] = field(default_factory=list)
    default_region: str | None = None

    @classmethod
    def load(cls, path: Path) -> HomeInfo:
        f = path / HOME_FILE
        if not f.exists():
            raise ConflictError(
                f"{path} is not an initialised Keyshift home; run `keyshift init` first",
                code="not_initialised",
            )
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            raise UsageError(f"{f} is unreadable or not JSON") from None
        if data.get("format") != HOME_FORMAT:
            raise UsageError(f"{f} has unsupported format {data.get('format')!r}")
        regions = data.get("regions") or []
        return cls(
            path=path,
            allow_fake_clock=bool(data.get("allow_fake_clock")),
            created_at=str(data.get("created_at", "")),
            database_url=data.get("database_url") or None,
            regions=[str(r) for r in regions] if isinstance(regions, list) else [],
            default_region=data.get("default_region") or None,
        )

    @staticmethod
    def write(
        path: Path,
        *,
        allow_fake_clock: bool,
        created_at: str,
        database_url: str | None = None,
        regions: list[str] | None = None,
        default_region: str | None = None,
    ) -> None:
        """Write home.json. `database_url` must already be stripped of any password."""
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        f = path / HOME_FILE
        tmp = f.with_suffix(".tmp")
        body: dict[str, object] = {
            "format": HOME_FORMAT,
            "allow_fake_clock": allow_fake_clock,
            "created_at": created_at,
        }
        if database_url:
            body["database_url"] = database_url
        if regions:
            body["regions"] = regions
        if default_region:
            body["default_region"] = default_region
        tmp.write_text(json.dumps(body, indent=2))
        os.replace(tmp, f)
