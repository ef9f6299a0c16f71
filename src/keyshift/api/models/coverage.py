"""Key coverage and retirement reports (what a key version still covers).

Vaults, environments, tenants, policies and jobs are `Ref`s; a key is its name within its vault."""

from __future__ import annotations

from keyshift.api.models.base import Out, Ref, Timestamp


class Counts(Out):
    """What depends on the data keys: counts and bytes per kind of data."""

    rows: int
    row_bytes: int
    events: int
    event_bytes: int
    files: int
    file_bytes: int
    search_indexes: int
    search_postings: int
    lake_exports: int
    lake_rows: int
    lake_bytes: int
    backups: int
    backup_bytes: int


class DataKeyStates(Out):
    """Live data key wraps by state."""

    current: int
    pending: int
    retained: int


class DataKeys(DataKeyStates):
    total: int


class EnvironmentUsage(Counts):
    """One environment's data under the key (version): the environment is `id` and `name`."""

    id: str
    name: str
    tenant: Ref
    stores: list[str]
    data_keys: DataKeyStates


class StoreUsage(Out):
    data_keys: int


class RetainedWindow(Out):
    """Data keys kept (retained) for a restore until `until` (null: no end date)."""

    environment: Ref
    until: Timestamp | None
    data_keys: int


class CoverageView(Out):
    """What one key version (or all of a key's versions together) covers."""

    covered: bool
    data_keys: DataKeys
    tenants: list[Ref]
    environments: list[EnvironmentUsage]
    stores: dict[str, StoreUsage]
    totals: Counts
    retained_windows: list[RetainedWindow]


class VersionCoverage(CoverageView):
    version: str


class KeyCoverage(Out):
    """Per key version: data keys, environments, stores and counts that depend on it."""

    vault: Ref
    key: str
    covered: bool
    versions: list[VersionCoverage]
    all_versions: CoverageView
    methods: dict[str, str]
    at: Timestamp
    identity: str | None = None


class Binding(Out):
    """The key new data keys of the environment are wrapped under."""

    mode: str | None
    vault: Ref | None
    key: str | None
    version: str | None


class KeyVersionCoverage(VersionCoverage):
    vault: Ref
    key: str


class EnvironmentCoverage(Out):
    """Every key version an environment's data depends on."""

    environment: Ref
    tenant: Ref
    binding: Binding
    keys: list[KeyVersionCoverage]
    methods: dict[str, str]
    at: Timestamp


class RetireJob(Out):
    """An environment moved off the version by a job (`job` null: one is in progress)."""

    environment: Ref
    job: Ref | None


class RetireBlocked(Out):
    """An environment the retirement cannot move: another action is needed (`reason`)."""

    environment: Ref
    policy: Ref | None
    reason: str


class RetireCoverage(Out):
    data_keys: DataKeys
    totals: Counts
    tenants: list[Ref]


class Retirement(Out):
    """What retiring a key version started and what still holds it."""

    vault: Ref
    key: str
    version: str
    current_version: str | None
    safe_now: bool
    safe_after: Timestamp | None
    jobs_started: list[RetireJob]
    waiting_on_jobs: list[RetireJob]
    needs_action: list[RetireBlocked]
    retained_windows: list[RetainedWindow]
    coverage: RetireCoverage
    summary: str
