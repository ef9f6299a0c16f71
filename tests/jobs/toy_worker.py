"""Subprocess entry point: `python toy_worker.py HOME [DBURL] LEASE` runs one worker --once with
the toy plan registered."""

from __future__ import annotations

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])

import toy

from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime

if __name__ == "__main__":
    home, url, lease = sys.argv[1], sys.argv[2] or None, float(sys.argv[3])
    assert toy.PLAN
    with Runtime.open(home=home, database_url=url, principal="operator:toy-worker") as rt:
        Worker(rt, lease_seconds=lease, poll_seconds=0.02).run_once()
