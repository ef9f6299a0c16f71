from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from keyshift.runtime import Runtime


@pytest.fixture(autouse=True)
def _fast_state_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes see an environment's layout at most this late; migrations wait 2x it after
    cutover before listing the old store. A short bound keeps these tests quick."""
    monkeypatch.setenv("KEYSHIFT_STATE_REFRESH_SECONDS", "0.2")


VAULT_OPS = ("describe", "wrap", "unwrap", "check_access")


class CountingVault:
    """Wraps a real vault adapter and counts the key operations made through it."""

    def __init__(self, inner: Any, counts: Counter[str]) -> None:
        self._inner = inner
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in VAULT_OPS:
            return attr

        def counted(*args: Any, **kw: Any) -> Any:
            self._counts[name] += 1
            return attr(*args, **kw)

        return counted


@pytest.fixture
def vault_calls(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()
    real = rt.vault
    monkeypatch.setattr(rt, "vault", lambda ref: CountingVault(real(ref), counts))
    yield counts
