"""Data plane: records, audit events, files (streaming upload and download)."""

from __future__ import annotations

from fastapi import APIRouter

from keyshift.stores.service import EnvironmentData  # noqa: F401

router = APIRouter(tags=["data plane"])
