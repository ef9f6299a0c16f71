"""CPU priority of a worker process: background jobs yield the CPU to clients on the same machine.

`keyshift worker` runs at niceness 10 by default (`--nice`): when the machine is otherwise idle a
job runs exactly as fast, and when the API server or a client process competes for the CPU the
scheduler gives them the larger share (CFS weights: niceness 10 ≈ a tenth of niceness 0), so a
migration running beside live traffic lengthens its latency less. Only ever raised: a process
already nicer (a service manager's `Nice=`) is left as it is, and no privilege is needed.
"""

from __future__ import annotations

import os

DEFAULT_NICE = 10


def lower_priority(nice: int = DEFAULT_NICE) -> int:
    """Raise this process's niceness to `nice` (0-19) unless it is already higher; returns the
    niceness in force."""
    if not 0 <= nice <= 19:
        raise ValueError("nice must be between 0 and 19")
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    return os.getpriority(os.PRIO_PROCESS, 0)
