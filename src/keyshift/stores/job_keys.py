"""Data keys held for one job's run in this process: a key-change job unwraps each DEK once.

A re-encrypting job touches every row of an environment. Through the per-process DEK cache alone it
would unwrap each key it uses again whenever the cache entry reaches a bound (age at most
`revocation_bound_seconds`, 60 s by default; `dek_cache_max_uses` uses): vault calls growing with
the job's length, not with its data keys. A job's `JobKeys` keeps what it looked up (through the
cache, so a key the cache holds costs no call) and renews an entry at the same bound without the
vault when the health monitor vouches for it:

* the environment's policy was checked **healthy** within `revocation_bound_seconds` (the monitor
  makes a real wrap/unwrap round trip as the policy identity), and
* the DEK's current wrap is under that policy's vault, key and checked version.

Otherwise (no policy, no recent check, an unhealthy or warning check, a wrap under another key) the
entry is looked up again through the cache, which unwraps — so revocation reaches a pinned key in
the same bound as any cached key, with or without a monitor:

* the job asks the environment state before every chunk (fail closed) and `DataKeys.flush(env)`,
  which a disabled or locked environment triggers, empties the pins of that environment;
* `release(rt, job_id)` drops a job's pins (the worker calls it when it sees the job end); at most
  `MAX_JOBS` jobs are pinned per process (the least recently used dropped first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import select

from keyshift.crypto.dek import DataKey
from keyshift.crypto.records import RecordCipher
from keyshift.db.engine import read_transaction
from keyshift.db.models import Dek, DekWrap, Environment, Policy
from keyshift.runtime import Runtime
from keyshift.stores.envstate import EnvView

if TYPE_CHECKING:
    from keyshift.stores.keys import DataKeys

EXTENSION = "keyshift.stores.job_keys"
MAX_JOBS = 16


class JobKeys:
    """The DEKs one job uses in this process (see the module docstring)."""

    def __init__(self, keys: DataKeys, job_id: str, env_id: str) -> None:
        self.keys = keys
        self.job_id = job_id
        self.env_id = env_id
        self._lock = threading.Lock()
        self._entries: dict[bytes, tuple[DataKey, datetime]] = {}  # DEK id -> (key, renew at)

    def key(self, rt: Runtime, env: EnvView, store: str, dek_id: bytes) -> DataKey:
        """The DEK, as held for this job; renewed at the cache's bound (vouched or looked up)."""
        entry = self._entries.get(dek_id)
        if entry is not None and rt.clock.now() < entry[1]:
            return entry[0]
        if entry is not None and vouched(rt, env.id, dek_id.hex()):
            key = entry[0]
        else:
            key = self.keys.key_for(rt, env, store, dek_id)
        self.hold(rt, key)
        return key

    def hold(self, rt: Runtime, key: DataKey) -> None:
        """Hold a key for the job until the cache's bound (the rewrap phase hands its unwraps on)."""
        s = rt.settings
        bound = timedelta(seconds=min(s.dek_cache_max_age_seconds, s.revocation_bound_seconds))
        with self._lock:
            self._entries[key.id] = (key, rt.clock.now() + bound)

    def decrypter(self, rt: Runtime, env: EnvView, store: str, dek_id: bytes) -> RecordCipher:
        """A record cipher for blobs under one DEK of the store, with the job's key."""
        return self.keys.decrypter(rt, env, store, dek_id, partial(self.key, rt, env, store))

    def cipher(self, rt: Runtime, env: EnvView, store: str) -> RecordCipher:
        """A record cipher encrypting under the store's primary DEK, with the job's key (its
        usage budget taken from the database as for any writer)."""
        return self.keys.cipher(rt, env, store, partial(self.key, rt, env, store))

    def drop(self) -> None:
        with self._lock:
            self._entries.clear()


def vouched(rt: Runtime, env_id: str, dek_hex: str) -> bool:
    """Whether the health monitor checked this DEK's key healthy within the revocation bound (one
    query, no vault call)."""
    since = rt.clock.now() - timedelta(seconds=rt.settings.revocation_bound_seconds)
    with read_transaction(rt.sessions) as s:
        row = s.execute(
            select(
                Policy.health,
                Policy.health_checked_at,
                Policy.vault_id,
                Policy.key_name,
                Policy.key_version,
                Policy.observed_key_version,
                DekWrap.vault_id,
                DekWrap.key_name,
                DekWrap.key_version,
            )
            .select_from(Environment)
            .join(Policy, Policy.id == Environment.policy_id)
            .join(Dek, Dek.environment_id == Environment.id)
            .join(DekWrap, DekWrap.dek_id == Dek.id)
            .where(
                Environment.id == env_id,
                Environment.state == "enabled",
                Dek.id == dek_hex,
                Dek.state != "destroyed",
                DekWrap.state == "current",
            )
        ).all()
    if len(row) != 1:
        return False
    health, checked, p_vault, p_key, p_pinned, p_observed, w_vault, w_key, w_version = row[0]
    version = p_pinned or p_observed
    return (
        health == "healthy"
        and checked is not None
        and checked >= since
        and (p_vault, p_key) == (w_vault, w_key)
        and (version is None or version == w_version)
    )


class _Pins:
    """This runtime's pinned jobs; wired to `DataKeys.flush` when made."""

    def __init__(self, rt: Runtime) -> None:
        from keyshift.stores.keys import data_keys

        self.keys = data_keys(rt)
        self.lock = threading.Lock()
        self.jobs: OrderedDict[str, JobKeys] = OrderedDict()
        self.keys.on_flush.append(self.flush)

    def get(self, job_id: str, env_id: str) -> JobKeys:
        with self.lock:
            current = self.jobs.get(job_id)
            if current is not None and current.env_id == env_id:
                self.jobs.move_to_end(job_id)
                return current
            made = self.jobs[job_id] = JobKeys(self.keys, job_id, env_id)
            while len(self.jobs) > MAX_JOBS:
                self.jobs.popitem(last=False)[1].drop()
            return made

    def flush(self, env_id: str | None) -> None:
        with self.lock:
            gone = [j for j, p in self.jobs.items() if env_id is None or p.env_id == env_id]
            for job_id in gone:
                self.jobs.pop(job_id).drop()

    def release(self, job_id: str) -> None:
        with self.lock:
            gone = self.jobs.pop(job_id, None)
        if gone is not None:
            gone.drop()


def _pins(rt: Runtime) -> _Pins:
    return rt.extension(EXTENSION, _Pins)  # type: ignore[no-any-return]


def job_keys(rt: Runtime, job_id: str, env_id: str) -> JobKeys:
    """This process's pins for a job (made on first use; flushed with the environment's keys)."""
    return _pins(rt).get(job_id, env_id)


def release(rt: Runtime, job_id: str) -> None:
    """The job ended (or this process stops working on it): drop its keys."""
    _pins(rt).release(job_id)
