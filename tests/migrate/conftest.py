from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fast_state_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes see an environment's layout at most this late; migrations wait 2x it after
    cutover before listing the old store. A short bound keeps these tests quick."""
    monkeypatch.setenv("KEYSHIFT_STATE_REFRESH_SECONDS", "0.2")
