"""Fixtures for the key coverage / retirement / lifecycle tests (helpers in keycov_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _fast_state_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Key-change jobs wait 2x the state refresh bound after cutover; keep it short here."""
    monkeypatch.setenv("KEYSHIFT_STATE_REFRESH_SECONDS", "0.2")
