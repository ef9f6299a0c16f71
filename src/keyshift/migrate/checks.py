"""Link preconditions: the control plane's `check_can_link` is the one source of the rules."""

from __future__ import annotations

from keyshift.control.preconditions import check_can_link

__all__ = ["check_can_link"]
