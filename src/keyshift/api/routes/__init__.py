"""Routers per resource. A router whose service layer has not landed yet is left out (logged)."""

from __future__ import annotations

import importlib
import logging

from fastapi import APIRouter

log = logging.getLogger("keyshift.api")

MODULES = (
    "keyshift.api.routes.meta",
    "keyshift.api.routes.tenants",
    "keyshift.api.routes.environments",
    "keyshift.api.routes.vaults",
    "keyshift.api.routes.policies",
    "keyshift.api.routes.jobs",
    "keyshift.api.routes.audit_trail",
    "keyshift.api.routes.audit_events",
    "keyshift.api.routes.byok",
    "keyshift.api.routes.data",
    "keyshift.api.routes.features",
    "keyshift.api.routes.feature_maintenance",
    "keyshift.api.routes.coverage",
    "keyshift.api.routes.tokens",
)


def _load() -> tuple[list[APIRouter], list[str]]:
    routers: list[APIRouter] = []
    missing: list[str] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            # Only a missing service module of another part is tolerated; our own bugs are not.
            if not (exc.name or "").startswith("keyshift.") or (exc.name or "").startswith("keyshift.api"):
                raise
            log.warning("API routes %s left out: %s is not available", name, exc.name)
            missing.append(name)
            continue
        routers.append(module.router)
    return routers, missing


ROUTERS, MISSING = _load()
