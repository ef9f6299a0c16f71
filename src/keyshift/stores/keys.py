"""DEK lifecycle per (environment, store): lazy creation, unwrap through the cache, usage budget,
rolling, flush, and rewrapping an environment under another KEK.

* A store's first write creates a random DEK, wraps it with the environment's current KEK
  (`rt.vault(env.kek_vault_id).wrap(...)` as `env.kek_identity`, context {tenant, environment,
  store}) and stores a `Dek` row plus its `current` `DekWrap`. Vault calls never run inside a DB
  transaction (a local vault opens its own, and SQLite's BEGIN IMMEDIATE would wait on ours); the
  insert re-checks, with the environment row locked, that the binding did not change and that no
  other process created the DEK meanwhile.
* The primary DEK of a store is its newest `active` DEK. Unwrapped DEKs live only in the
  per-runtime `DekCache` (bounded by `settings.dek_cache_*`); a miss unwraps the `current` wrap.
* Usage budget: every process reserves blocks of encryptions from `Dek.encryptions` with one
  atomic UPDATE (blocks grow 64 -> 2^20, so short-lived CLI processes waste little); when the
  counter would pass the limit (2^31) the DEK is retired and a new one takes over.
* Vault errors keep their class and outcome and name the environment; the message never carries
  key bytes. A refused DEK operation is reported as a `KeyFailure` event to the handlers in
  `on_key_failure` (the control plane wires its confirmed check there): the data plane never
  changes an environment's state itself.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.crypto.cache import DekCache
from keyshift.crypto.dek import (
    DEFAULT_BLOCK,
    DEFAULT_DEK_LIMIT,
    BlockBudget,
    DataKey,
    Keyring,
    generate_dek,
)
from keyshift.crypto.records import RecordCipher
from keyshift.db.engine import read_transaction
from keyshift.db.models import Dek, DekWrap, Environment
from keyshift.errors import (
    ConflictError,
    IntegrityError,
    KeyInaccessibleError,
    KeyshiftError,
    NotFoundError,
    VaultUnavailableError,
)
from keyshift.runtime import Runtime
from keyshift.stores.envstate import EnvView, env_states
from keyshift.vaults.base import KeyRef, WrappedKey, with_retries

EXTENSION = "keyshift.stores.keys"
STORES = ("records", "audit", "files", "search", "lake", "backup")
FIRST_BLOCK = 64
UNKNOWN_KEY = "unknown data key"
HOT_MAX_USES = 4096  # uses a hot key serves before it reports back to the cache
HOT_BYTES_PER_USE = (16 << 20) + 64  # the most plaintext one record decrypts to

T = TypeVar("T")
KeyLookup = Callable[[bytes], DataKey]  # a DEK by its id


@dataclass(frozen=True)
class KeyFailure:
    """The event the data plane reports when a vault refused one of its DEK operations.

    `op` is "unwrap" (with the `wrap` row that failed) or "wrap" (with the `target` KEK). The
    control plane decides what it means (control.key_events); the data plane never changes an
    environment's state itself.
    """

    rt: Runtime
    env_id: str
    store: str
    op: str
    error: KeyInaccessibleError
    wrap: DekWrap | None = None
    target: KekTarget | None = None


# A handler returns the error the request should fail with instead (e.g. "environment disabled"),
# or None to keep the vault's.
KeyFailureHandler = Callable[[KeyFailure], "KeyshiftError | None"]


@dataclass(frozen=True)
class KekTarget:
    """A KEK to wrap DEKs under: a registered vault (id), a key name, the identity to act as."""

    vault_id: str
    key_name: str
    identity: str
    key_version: str | None = None


def target_of(env: EnvView | Environment) -> KekTarget:
    if not env.kek_vault_id or not env.kek_key_name or not env.kek_identity:
        raise ConflictError(f"environment {env.name!r} has no encryption key binding", code="no_key_binding")
    return KekTarget(env.kek_vault_id, env.kek_key_name, env.kek_identity, env.kek_key_version)


def _context(tenant_id: str, env_id: str, store: str) -> dict[str, str]:
    return {"tenant": tenant_id, "environment": env_id, "store": store}


def _vault_error(env_name: str, exc: KeyshiftError) -> KeyshiftError:
    """Translate a vault error into the data plane's: which environment, which kind of failure.
    The class (so the outcome, exit code and HTTP status) and the code stay the vault error's."""
    if isinstance(exc, VaultUnavailableError):
        return type(exc)(
            f"the key vault of environment {env_name!r} is unavailable ({exc.code}); retry later",
            code=exc.code,
        )
    if isinstance(exc, KeyInaccessibleError) and exc.outcome == "local":
        # This process cannot use the vault: say which environment, the cause and the fix.
        return type(exc)(f"environment {env_name!r}: {exc.message}", code=exc.code)
    if isinstance(exc, KeyInaccessibleError):
        return type(exc)(
            f"the encryption key of environment {env_name!r} is inaccessible ({exc.code})", code=exc.code
        )
    if isinstance(exc, NotFoundError):
        code = exc.code if isinstance(exc, KeyInaccessibleError) else "key_not_found"
        return KeyInaccessibleError(
            f"the encryption key of environment {env_name!r} is inaccessible ({code})", code=code
        )
    if isinstance(exc, IntegrityError):
        return IntegrityError(f"a data key of environment {env_name!r} failed to unwrap", code=exc.code)
    return exc


class HotKey:
    """A cached DEK lent to the record read path: no lock and no clock arithmetic per record.

    Serves while `live`, before `deadline` (monotonic seconds) and while `next(tickets)` is below
    `allowance`. The deadline is at most what is left of the cache entry's age (itself at most the
    revocation bound) and at most `state_refresh_seconds`; the allowance is at most the uses the
    entry has left and fits in the bytes it has left at the largest record size. The record path
    appends each plaintext size to `sizes`; the next `DataKeys.hot_key` call reports them to the
    cache. `flush()` clears `live` (revocation reaches a hot key at once).
    """

    __slots__ = ("allowance", "cipher", "deadline", "live", "sizes", "tickets")

    def __init__(self, cipher: RecordCipher, deadline: float, allowance: int) -> None:
        self.cipher = cipher
        self.deadline = deadline
        self.allowance = allowance
        self.tickets = itertools.count()
        self.sizes: list[int] = []
        self.live = True


class DataKeys:
    """Per-runtime DEK state: the unwrapped-DEK cache, usage budgets, vault-call counts."""

    def __init__(self, rt: Runtime) -> None:
        s = rt.settings
        self.cache = DekCache(
            # No cached DEK outlives the revocation bound (control/revocation.py).
            max_age_seconds=min(s.dek_cache_max_age_seconds, s.revocation_bound_seconds),
            max_uses=s.dek_cache_max_uses,
            max_bytes=s.dek_cache_max_bytes,
            clock=rt.clock,
        )
        self.limit = DEFAULT_DEK_LIMIT
        self.max_block = DEFAULT_BLOCK
        self.vault_calls: dict[str, int] = {"wrap": 0, "unwrap": 0}
        self._budgets: dict[str, BlockBudget] = {}
        # (env, store) -> (primary DEK id, monotonic time it was read). Re-read after
        # settings.state_refresh_seconds, so a DEK retired elsewhere (a re-encrypting migration,
        # another process rolling it) stops taking writes here within that bound.
        self._primary: dict[tuple[str, str], tuple[str, float]] = {}
        self.monotonic = time.monotonic
        self._ciphers: dict[tuple[str, str], tuple[DataKey, RecordCipher]] = {}
        self._decrypters: dict[tuple[str, str, bytes], tuple[DataKey, RecordCipher]] = {}
        self._lock = threading.RLock()
        self._inflight: dict[tuple[str, bytes], threading.Lock] = {}
        self._hot: dict[tuple[str, str, bytes], HotKey] = {}
        self._flushes = 0
        # Called when the vault refuses a DEK operation; wired by the runtime's opener
        # (control.key_events.wire). Unwired, the request simply fails with the vault's error.
        self.on_key_failure: list[KeyFailureHandler] = []
        # Called with the environment id (None: all) after every flush: holders of keys outside
        # the cache (a job's pinned keys, stores.job_keys) drop them too.
        self.on_flush: list[Callable[[str | None], None]] = []
        env_states(rt).on_unusable.append(self.flush)

    def report(self, failure: KeyFailure) -> KeyshiftError:
        """Tell the handlers about a refused DEK operation; the error the request fails with."""
        for handler in list(self.on_key_failure):
            replaced = handler(failure)
            if replaced is not None:
                return replaced
        return failure.error

    # -- vault calls -------------------------------------------------------------------------
    def _call(self, env_name: str, op: str, fn: Callable[[], T]) -> T:
        with self._lock:
            self.vault_calls[op] = self.vault_calls.get(op, 0) + 1
        try:
            return with_retries(fn)
        except KeyshiftError as exc:
            raise _vault_error(env_name, exc) from None

    def wrap(
        self, rt: Runtime, env_name: str, target: KekTarget, dek: DataKey, context: Mapping[str, str]
    ) -> tuple[WrappedKey, str]:
        """Wrap a DEK under a target KEK; returns the wrapped key and the vault's id."""
        vault = rt.vault(target.vault_id)
        ref = KeyRef(vault.name, target.key_name, target.key_version)
        wrapped = self._call(
            env_name, "wrap", lambda: vault.wrap(ref, dek.key, identity=target.identity, context=context)
        )
        return wrapped, target.vault_id

    def unwrap(self, rt: Runtime, env_name: str, wrap: DekWrap, context: Mapping[str, str]) -> DataKey:
        vault = rt.vault(wrap.vault_id)
        wk = WrappedKey(
            key=KeyRef(vault.name, wrap.key_name, wrap.key_version),
            algorithm=wrap.algorithm,
            ciphertext=wrap.wrapped,
            meta=dict(wrap.meta or {}),
        )
        identity = wrap.identity or ""
        raw = self._call(env_name, "unwrap", lambda: vault.unwrap(wk, identity=identity, context=context))
        try:
            return DataKey(bytes.fromhex(wrap.dek_id), raw)
        except ValueError:
            raise IntegrityError(
                f"a data key of environment {env_name!r} failed to unwrap", code="unwrap_failed"
            ) from None

    # -- reading keys ------------------------------------------------------------------------
    def key_for(self, rt: Runtime, env: EnvView, store: str, dek_id: bytes) -> DataKey:
        """The DEK with this id, if it belongs to this environment and store (cache, else unwrap).

        Concurrent misses on the same DEK share one unwrap (a per-DEK lock); the instance lock is
        only ever held for dictionary updates, never across database or vault I/O, so a slow vault
        stalls no other key and `flush()` from inside a transaction cannot deadlock against it.
        """
        key = self.cache.get(env.id, dek_id)
        if key is not None:
            return key
        slot = (env.id, dek_id)
        with self._lock:
            flight = self._inflight.setdefault(slot, threading.Lock())
        try:
            with flight:
                key = self.cache.get(env.id, dek_id, recheck=True)
                if key is not None:
                    return key
                key = self._load(rt, env, store, dek_id)
                self.cache.put(env.id, key)
                return key
        finally:
            with self._lock:
                if self._inflight.get(slot) is flight:
                    del self._inflight[slot]

    def _load(self, rt: Runtime, env: EnvView, store: str, dek_id: bytes) -> DataKey:
        with read_transaction(rt.sessions) as s:
            wrap = s.scalars(
                select(DekWrap)
                .join(Dek, Dek.id == DekWrap.dek_id)
                .where(
                    Dek.id == dek_id.hex(),
                    Dek.environment_id == env.id,
                    Dek.store == store,
                    Dek.state != "destroyed",
                    DekWrap.state == "current",
                )
                .order_by(DekWrap.id.desc())
                .limit(1)
            ).first()
            if wrap is not None:
                s.expunge(wrap)
        if wrap is None:
            raise IntegrityError(UNKNOWN_KEY)
        try:
            return self.unwrap(rt, env.name, wrap, _context(env.tenant_id, env.id, store))
        except KeyInaccessibleError as exc:
            raise self.report(KeyFailure(rt, env.id, store, "unwrap", exc, wrap=wrap)) from None

    def note_use(self, env_id: str, dek_id: bytes, nbytes: int) -> None:
        self.cache.note_use(env_id, dek_id, nbytes)

    def hot_key(self, rt: Runtime, env: EnvView, store: str, dek_id: bytes) -> HotKey:
        """The live hot key for one DEK of the store, with one use taken for the caller.

        If the shared one is spent or past its deadline, reports its uses to the cache and makes a
        new one, looking the key up exactly as `key_for` does (cache bounds, unwrap on a miss,
        fail closed).
        """
        slot = (env.id, store, dek_id)
        current = self._hot.get(slot)
        if (
            current is not None
            and current.live
            and self.monotonic() < current.deadline
            and next(current.tickets) < current.allowance
        ):
            self.cache.stats.hot_hits.tick()  # a cache hit, served without the cache's lock
            return current  # another reader renewed it already
        with self._lock:
            old = self._hot.get(slot)
            if old is not None and old is current:
                del self._hot[slot]
            else:
                old = None
            generation = self._flushes
        if old is not None:
            old.live = False
            sizes, old.sizes = old.sizes, []
            self.cache.note_uses(env.id, dek_id, len(sizes), sum(sizes))
        key = self.key_for(rt, env, store, dek_id)
        lease = self.cache.lease(env.id, dek_id)
        now = self.monotonic()
        if lease is None or lease[0] is not key:  # evicted meanwhile: serve this one use only
            hot = HotKey(RecordCipher(Keyring(key)), now, 1)
        else:
            _, age_left, uses_left, bytes_left = lease
            allowance = max(1, min(HOT_MAX_USES, uses_left, bytes_left // HOT_BYTES_PER_USE))
            deadline = now + min(age_left, rt.settings.state_refresh_seconds)
            hot = HotKey(RecordCipher(Keyring(key)), deadline, allowance)
        next(hot.tickets)  # the caller's use
        with self._lock:
            if self._flushes == generation:
                self._hot[slot] = hot
            else:  # flushed while we looked the key up: this use only, like key_for's race
                hot.live = False
        return hot

    # -- the primary (encrypting) key ---------------------------------------------------------
    def primary(
        self, rt: Runtime, env: EnvView, store: str, lookup: KeyLookup | None = None
    ) -> tuple[DataKey, BlockBudget]:
        """The store's primary DEK (created on first use) and its usage budget. `lookup` finds
        the key by its id instead of `key_for` (a job's held keys, stores.job_keys)."""
        dek_hex = self.primary_hex(rt, env, store)
        dek_id = bytes.fromhex(dek_hex)
        key = lookup(dek_id) if lookup is not None else self.key_for(rt, env, store, dek_id)
        return key, self.budget(rt, dek_hex)

    def primary_hex(self, rt: Runtime, env: EnvView, store: str) -> str:
        """The id of the store's primary DEK (created on first use), without looking the key up;
        re-read after `state_refresh_seconds`."""
        if store not in STORES:
            raise ValueError(f"unknown store {store!r}")
        hint = self._primary.get((env.id, store))
        if hint is not None and self.monotonic() - hint[1] < rt.settings.state_refresh_seconds:
            return hint[0]
        return self._load_or_create_primary(rt, env, store)

    def roll(self, rt: Runtime, env: EnvView, store: str, dek_id: bytes) -> None:
        """The DEK ran out of budget: retire it so the next `primary` takes, or makes, a new one."""
        dek_hex = dek_id.hex()
        self._retire(rt, dek_hex)
        with self._lock:
            hint = self._primary.get((env.id, store))
            if hint is not None and hint[0] == dek_hex:
                del self._primary[(env.id, store)]
            self._budgets.pop(dek_hex, None)
            self._ciphers.pop((env.id, store), None)

    def reserve(self, rt: Runtime, env: EnvView, store: str, count: int = 1) -> DataKey:
        """The primary DEK with `count` encryptions taken from its budget (rolling when exhausted)."""
        for _ in range(8):
            key, budget = self.primary(rt, env, store)
            if budget.reserve(count):
                return key
            self.roll(rt, env, store, key.id)
        raise ConflictError(
            f"could not obtain a data key for environment {env.name!r}", code="dek_unavailable"
        )

    def cipher(self, rt: Runtime, env: EnvView, store: str, lookup: KeyLookup | None = None) -> RecordCipher:
        """A record cipher encrypting under the primary DEK, decrypting any DEK of the store
        (keys found by `lookup` if given, else through the cache).

        Rebuilt whenever the lookup hands out a different key object (expired, flushed, rolled),
        so the cache (or the job's held keys) stays the one place deciding how long an unwrapped
        key lives.
        """
        key, budget = self.primary(rt, env, store, lookup)
        with self._lock:
            entry = self._ciphers.get((env.id, store))
            if entry is not None and entry[0] is key:
                return entry[1]
            resolve = lookup or (lambda dek_id: self.key_for(rt, env, store, dek_id))
            cipher = RecordCipher(Keyring(key, resolve=resolve), budget, budget_chunk=256)
            self._ciphers[(env.id, store)] = (key, cipher)
            return cipher

    def decrypter(
        self, rt: Runtime, env: EnvView, store: str, dek_id: bytes, lookup: KeyLookup | None = None
    ) -> RecordCipher:
        """A record cipher for blobs under one given DEK of the store (found as in `cipher`)."""
        key = lookup(dek_id) if lookup is not None else self.key_for(rt, env, store, dek_id)
        with self._lock:
            entry = self._decrypters.get((env.id, store, dek_id))
            if entry is not None and entry[0] is key:
                return entry[1]
            cipher = RecordCipher(Keyring(key))
            if len(self._decrypters) > 1024:
                self._decrypters.clear()
            self._decrypters[(env.id, store, dek_id)] = (key, cipher)
            return cipher

    def budget(self, rt: Runtime, dek_hex: str) -> BlockBudget:
        """This process's usage budget of a DEK (blocks reserved from `Dek.encryptions`)."""
        with self._lock:
            budget = self._budgets.get(dek_hex)
            if budget is None:
                holder: list[BlockBudget] = []

                def reserve_block(n: int) -> bool:
                    ok = self._reserve(rt, dek_hex, n)
                    if ok and holder:
                        holder[0].block = min(holder[0].block * 2, self.max_block)
                    return ok

                budget = BlockBudget(reserve_block, block=min(FIRST_BLOCK, self.max_block))
                holder.append(budget)
                self._budgets[dek_hex] = budget
            return budget

    def _reserve(self, rt: Runtime, dek_hex: str, n: int) -> bool:
        with rt.transaction() as s:
            res = s.execute(
                update(Dek)
                .where(Dek.id == dek_hex, Dek.state == "active", Dek.encryptions <= self.limit - n)
                .values(encryptions=Dek.encryptions + n)
                .execution_options(synchronize_session=False)
            )
            return bool(res.rowcount == 1)  # type: ignore[attr-defined]

    def _retire(self, rt: Runtime, dek_hex: str) -> None:
        with rt.transaction() as s:
            s.execute(
                update(Dek)
                .where(Dek.id == dek_hex, Dek.state == "active")
                .values(state="retired", version=Dek.version + 1)
                .execution_options(synchronize_session=False)
            )

    @staticmethod
    def _primary_id(s: Session, env_id: str, store: str) -> str | None:
        return s.scalars(
            select(Dek.id)
            .where(Dek.environment_id == env_id, Dek.store == store, Dek.state == "active")
            .order_by(Dek.created_at.desc(), Dek.id.desc())
            .limit(1)
        ).first()

    def _load_or_create_primary(self, rt: Runtime, env: EnvView, store: str) -> str:
        with read_transaction(rt.sessions) as s:
            dek_hex = self._primary_id(s, env.id, store)
        if dek_hex is None:
            dek_hex = self._create(rt, env.id, store)
        with self._lock:
            self._primary[(env.id, store)] = (dek_hex, self.monotonic())
        return dek_hex

    def _create(self, rt: Runtime, env_id: str, store: str) -> str:
        """Create the store's first (or next) DEK under the environment's current KEK."""
        for _ in range(5):
            with rt.transaction() as s:
                env = s.get(Environment, env_id)
                if env is None:
                    raise NotFoundError(f"environment {env_id!r} not found", code="environment_not_found")
                target, name, tenant_id = target_of(env), env.name, env.tenant_id
                existing = self._primary_id(s, env_id, store)
            if existing is not None:
                return existing
            dek = generate_dek()
            context = _context(tenant_id, env_id, store)
            try:
                wrapped, vault_id = self.wrap(rt, name, target, dek, context)
            except KeyInaccessibleError as exc:
                raise self.report(KeyFailure(rt, env_id, store, "wrap", exc, target=target)) from None
            with rt.transaction() as s:
                env = s.scalars(select(Environment).where(Environment.id == env_id).with_for_update()).one()
                if target_of(env) != target:
                    continue  # the binding changed while we were wrapping: wrap again under the new one
                existing = self._primary_id(s, env_id, store)
                if existing is not None:
                    return existing
                now = rt.clock.now()
                s.add(
                    Dek(
                        id=dek.id.hex(),
                        environment_id=env_id,
                        store=store,
                        state="active",
                        encryptions=0,
                        created_at=now,
                    )
                )
                s.flush()
                s.add(wrap_row(dek.id.hex(), vault_id, wrapped, target.identity, "current", now))
                audit_trail.record(
                    rt,
                    s,
                    "dek.create",
                    target_type="environment",
                    target_id=env_id,
                    tenant_id=tenant_id,
                    details={"store": store, "dek": dek.id.hex(), "key": f"{wrapped.key}"},
                )
            self.cache.put(env_id, dek)
            return dek.id.hex()
        raise ConflictError(
            f"the key binding of environment {env_id!r} kept changing; retry", code="concurrent_update"
        )

    # -- flush -------------------------------------------------------------------------------
    def flush(self, env_id: str | None = None) -> int:
        """Drop cached DEKs (and primary hints) of one environment, or of all. Returns entries dropped."""
        with self._lock:
            self._flushes += 1
            for slot in [k for k in self._hot if env_id is None or k[0] == env_id]:
                self._hot.pop(slot).live = False
            if env_id is None:
                self._primary.clear()
                self._ciphers.clear()
                self._decrypters.clear()
            else:
                for k in [k for k in self._primary if k[0] == env_id]:
                    del self._primary[k]
                for k in [k for k in self._ciphers if k[0] == env_id]:
                    del self._ciphers[k]
                for k3 in [k3 for k3 in self._decrypters if k3[0] == env_id]:
                    del self._decrypters[k3]
            dropped = int(self.cache.flush(env_id))
        for listener in list(self.on_flush):
            listener(env_id)
        return dropped


def wrap_row(
    dek_hex: str, vault_id: str, wrapped: WrappedKey, identity: str, state: str, now: datetime
) -> DekWrap:
    """The `dek_wraps` row recording one wrap of a DEK (`state`: current, pending, ...)."""
    return DekWrap(
        dek_id=dek_hex,
        vault_id=vault_id,
        key_name=wrapped.key.name,
        key_version=wrapped.key.version or "",
        identity=identity,
        algorithm=wrapped.algorithm,
        wrapped=wrapped.ciphertext,
        meta=dict(wrapped.meta or {}),
        state=state,
        created_at=now,
    )


def data_keys(rt: Runtime) -> DataKeys:
    return rt.extension(EXTENSION, DataKeys)  # type: ignore[no-any-return]


def flush(rt: Runtime, env_id: str | None = None) -> int:
    """Drop this process's unwrapped DEKs of an environment (revocation), or of all."""
    return data_keys(rt).flush(env_id)


def rewrap_environment(rt: Runtime, env_id: str, target: KekTarget, **options: Any) -> dict[str, Any]:
    """Rewrap every DEK of an environment under `target` (see keyshift.stores.rewrap)."""
    from keyshift.stores.rewrap import rewrap_environment as rewrap

    return rewrap(rt, env_id, target, **options)


__all__ = [
    "STORES",
    "UNKNOWN_KEY",
    "DataKeys",
    "KekTarget",
    "KeyFailure",
    "KeyFailureHandler",
    "data_keys",
    "flush",
    "rewrap_environment",
    "target_of",
]
