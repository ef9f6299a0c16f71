"""A serving process for the two-process revocation test: reads and writes one environment in a loop.

Usage: python serve_loop.py HOME ENV_ID OUT STOP [DATABASE_URL]
Each request appends one line to OUT: `<unix time> <op> <id> ok|<error code> <cached DEKs>`.
Stops when the file STOP exists. Bounds come from KEYSHIFT_* environment variables.
"""

from __future__ import annotations

import os
import sys
import time

from keyshift.control.key_events import wire
from keyshift.errors import KeyshiftError
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys


def main() -> None:
    home, env_id, out_path, stop = sys.argv[1:5]
    db_url = sys.argv[5] if len(sys.argv) > 5 else None
    # A data-plane process, wired as every interface wires its runtime (control.key_events).
    rt = wire(Runtime.open(home=home, database_url=db_url, principal="service:serve-loop"))
    try:
        from keyshift.stores.service import EnvironmentData

        records = EnvironmentData(rt, env_id).records
    except ImportError:  # pragma: no cover - before the service layer landed
        from keyshift.stores.records import RecordStore

        records = RecordStore(rt, env_id)
    i = 0
    with open(out_path, "a", buffering=1) as out:
        while not os.path.exists(stop):
            i += 1
            for op in ("put", "get"):
                rid = f"w{i:06d}"
                try:
                    if op == "put":
                        records.put("t", rid, {"i": i})
                    else:
                        records.get("t", "r00001")
                    outcome = "ok"
                except KeyshiftError as err:
                    outcome = err.code
                out.write(f"{time.time():.4f} {op} {rid} {outcome} {len(data_keys(rt).cache)}\n")
            time.sleep(0.01)
    rt.close()


if __name__ == "__main__":
    main()
