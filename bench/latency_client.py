"""The client process of bench_latency: `python bench/latency_client.py HOME DB_URL ENV_ID`.

Prints "ready" once warm, then loops one `records.get` + one `records.put` per sample until its
stdin closes, and prints the per-sample seconds as a JSON list.
"""

from __future__ import annotations

import json
import sys
import threading
import time


def main(home: str, url: str, env_id: str) -> None:
    from keyshift.runtime import Runtime
    from keyshift.stores.records import RecordStore

    rt = Runtime.open(home=home, database_url=url or None, principal="service:bench-client")
    store = RecordStore(rt, env_id)
    store.get("accounts", "a0000000")
    store.put("accounts", "live0", {"i": 0})
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    print("ready", flush=True)
    samples: list[float] = []
    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        store.get("accounts", f"a{i % 1000:07d}")
        store.put("accounts", f"live{i % 100}", {"i": i})
        samples.append(time.perf_counter() - t0)
        i += 1
    rt.close()
    print(json.dumps(samples))


if __name__ == "__main__":
    main(*sys.argv[1:4])
