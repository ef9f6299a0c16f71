"""Due maintenance the worker runs after its jobs (and `keyshift maintenance run` runs alone).

Tasks are named functions `(rt) -> dict` imported lazily; a task whose module is not there yet is
reported as skipped, never silently dropped.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from keyshift.errors import KeyshiftError
from keyshift.runtime import Runtime

log = logging.getLogger("keyshift.maintenance")

TASKS: tuple[tuple[str, str], ...] = (
    ("purge_retained", "keyshift.migrate.maintenance:purge_expired_retention"),
    ("delete_byok_vaults", "keyshift.migrate.finalize:delete_due_vaults"),
    # Policies with a rotation period whose key version is due: rotated in the vault (audited).
    ("auto_rotate", "keyshift.control.lifecycle:rotate_due"),
    ("rotation", "keyshift.migrate.maintenance:detect_rotations"),
    # Revocation (control/monitor.py, control/deletion.py): policy health on its interval (disables
    # environments of unhealthy policies), then due deletions of disabled / locked environments.
    ("health", "keyshift.control.monitor:monitor_due"),
    ("deletions", "keyshift.control.deletion:run_due_deletions"),
    # A tenant lock with no locked environment left ends; a BYOK-off tenant with no BYOK environment
    # left finalizes; environments of a finalized tenant still in SQL get their relayout job.
    ("byok_settle", "keyshift.control.byok_lifecycle:settle_all"),
    ("relayout", "keyshift.migrate.relayout:relayout_due"),
    # Feature storages (keyshift/features): search key replaced after a swap / re-encryption,
    # expired backups purged.
    ("search_rekey", "keyshift.features.search_jobs:rekey_due"),
    ("purge_backups", "keyshift.features.backups:purge_expired_backups"),
    # File storage: temp files of writers killed mid-write (older than a safe age).
    ("temp_files", "keyshift.stores.file_backends:clean_temp_files"),
)


def run_due(rt: Runtime, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, target in TASKS:
        if only is not None and name not in only:
            continue
        module, attr = target.split(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ModuleNotFoundError, AttributeError) as exc:
            out[name] = {"skipped": f"not available: {exc}"}
            continue
        try:
            out[name] = fn(rt)
        except KeyshiftError as err:
            log.warning("maintenance task %s failed: %s", name, err.code)
            out[name] = {"error": err.to_dict()["error"]}
    return out
