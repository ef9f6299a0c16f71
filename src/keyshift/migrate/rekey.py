"""The re-encryption primitive: ciphertext under an old DEK -> the same plaintext bytes under the
store's fresh primary DEK. No value is decoded (no JSON round trip): the bytes are carried as-is.

Vault work is O(data keys), never O(rows): each DEK is unwrapped once through the per-process DEK
cache and the fresh primary is created (one wrap) by the first batch that needs it. Given a job id,
the keys are held for the job's run (`stores.job_keys`: renewed at the cache's bound without the
vault while the health monitor vouches for them, so a long job does not unwrap again every bound).
Nothing is flushed per batch; instead every chunk asks the environment state (refreshed every
`state_refresh_seconds`): a disabled or locked environment is refused and its cached and pinned
keys are flushed by that check.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from keyshift.clock import utc
from keyshift.crypto.dek import DataKeyExhaustedError
from keyshift.crypto.records import RecordCipher, ad_prefix
from keyshift.errors import ConflictError, IntegrityError
from keyshift.runtime import Runtime
from keyshift.stores.envstate import EnvView, env_states
from keyshift.stores.job_keys import job_keys
from keyshift.stores.keys import data_keys


class Rekeyer:
    """Re-encrypts blobs of one store of one environment away from a set of old DEKs."""

    def __init__(
        self, rt: Runtime, env_id: str, store: str, old_deks: Iterable[str], *, job_id: str | None = None
    ) -> None:
        self.rt = rt
        self.env_id = env_id
        self.store = store
        self.old = frozenset(old_deks)
        self.old_raw = frozenset(bytes.fromhex(d) for d in self.old)
        self.keys = data_keys(rt)
        self.pins = None if job_id is None else job_keys(rt, job_id, env_id)

    def _cipher(self, env: EnvView) -> RecordCipher:
        if self.pins is None:
            return self.keys.cipher(self.rt, env, self.store)
        return self.pins.cipher(self.rt, env, self.store)

    def _decrypter(self, env: EnvView, dek: bytes) -> RecordCipher:
        if self.pins is None:
            return self.keys.decrypter(self.rt, env, self.store, dek)
        return self.pins.decrypter(self.rt, env, self.store, dek)

    def env(self) -> EnvView:
        """The environment, if usable (EnvironmentUnavailableError otherwise; caches flushed)."""
        return env_states(self.rt).require_usable(self.env_id)

    def under_old(self, blob: bytes) -> bool:
        """Whether a blob's header names one of the old DEKs (the header is authenticated)."""
        return blob[4:20] in self.old_raw

    def fresh_cipher(self, env: EnvView) -> RecordCipher:
        """A cipher whose primary is not one of the old DEKs. A primary hint this process still
        holds for a retired DEK is dropped (`roll`: no cache flush, no vault call)."""
        for _ in range(4):
            cipher = self._cipher(env)
            primary = cipher.keyring.primary.id
            if primary.hex() not in self.old:
                return cipher
            self.keys.roll(self.rt, env, self.store, primary)
        raise ConflictError(
            f"no fresh data key for the {self.store} store of environment {env.name!r}; retry",
            code="dek_unavailable",
        )

    def decrypt(self, env: EnvView, collection: str, items: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Plaintext bytes of each (item id, blob) of one collection (under whichever DEK its
        header names)."""
        prefix = ad_prefix(env.tenant_id, env.id, self.store, collection)
        ciphers: dict[bytes, RecordCipher] = {}
        used: dict[bytes, int] = {}  # bytes decrypted per DEK: one use of each key per call
        out: list[bytes] = []
        append = out.append
        for item_id, blob in items:
            try:
                if len(blob) < 20:
                    raise IntegrityError("ciphertext is malformed")
                dek = blob[4:20]
                cipher = ciphers.get(dek)
                if cipher is None:
                    cipher = ciphers[dek] = self._decrypter(env, dek)
                    used[dek] = 0
                plain = cipher.decrypt_record(blob, prefix, item_id)
            except IntegrityError:
                raise IntegrityError(
                    f"{self.store} item {collection}/{item_id} of environment {env.name!r} failed "
                    "authentication (stored ciphertext is corrupt or was moved)"
                ) from None
            used[dek] += len(plain)
            append(plain)
        for dek, nbytes in used.items():
            self.keys.note_use(env.id, dek, nbytes)
        return out

    def encrypt(self, env: EnvView, collection: str, items: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Encrypt (item id, plaintext bytes) of one collection under the fresh primary; roll to a
        new DEK when one runs out."""
        prefix = ad_prefix(env.tenant_id, env.id, self.store, collection)
        out: list[bytes] = []
        append = out.append
        while len(out) < len(items):
            cipher = self.fresh_cipher(env)
            primary = cipher.keyring.primary.id
            encrypt = cipher.encrypt_record
            nbytes = 0
            try:
                for item_id, plain in items[len(out) :]:
                    append(encrypt(plain, prefix, item_id))
                    nbytes += len(plain)
            except DataKeyExhaustedError:
                self.keys.roll(self.rt, env, self.store, primary)
            finally:
                self.keys.note_use(env.id, primary, nbytes)
        return out

    def reencrypt(self, env: EnvView, collection: str, items: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """New blobs for (item id, old blob) pairs: same location, same plaintext bytes."""
        plains = self.decrypt(env, collection, items)
        return self.encrypt(env, collection, [(i, p) for (i, _), p in zip(items, plains, strict=True)])


def copy_events(
    rt: Runtime,
    env_id: str,
    events: Sequence[tuple[str, datetime, bytes]],
    *,
    fresh: bool,
    point: Callable[[str], None] | None = None,
    job_id: str | None = None,
) -> int:
    """Copy stored audit events (id, time, blob) into the environment's current audit backend,
    re-encrypted with their plaintext bytes carried as they are (no JSON round trip). The time
    sealed inside each plaintext is still checked against the stored time (a byte comparison of
    the canonical prefix; a full parse only when that prefix differs), so an event moved in time is
    refused here as on a read. An event already in the target is skipped. `fresh`: the copies go
    under a DEK none of the source events used (a forward move after its DEKs were retired).
    Returns how many were copied."""
    from keyshift.stores.audit import COLLECTION, STORE
    from keyshift.stores.audit_bulk import append_if_absent
    from keyshift.stores.layout import choose

    if not events:
        return 0
    old: set[str] = set()
    if fresh:  # every audit DEK no longer active (the move retired them) plus the sources' own
        from sqlalchemy import select

        from keyshift.db.models import Dek

        old = {bytes(blob[4:20]).hex() for _e, _a, blob in events}
        with rt.transaction() as s:
            here = (Dek.environment_id == env_id, Dek.store == STORE)
            old.update(s.scalars(select(Dek.id).where(*here, Dek.state != "active")))
    rekeyer = Rekeyer(rt, env_id, STORE, old, job_id=job_id)
    env = rekeyer.env()
    plains = rekeyer.decrypt(env, COLLECTION, [(eid, bytes(blob)) for eid, _at, blob in events])
    for (eid, at, _blob), plain in zip(events, plains, strict=True):
        if not _sealed_at(plain, utc(at)):
            raise IntegrityError(f"audit event {eid} of environment {env.name!r} failed authentication")
    pairs_in = [(eid, p) for (eid, _at, _b), p in zip(events, plains, strict=True)]
    blobs = rekeyer.encrypt(env, COLLECTION, pairs_in)
    pairs = zip(events, blobs, strict=True)
    rows = [(eid, utc(at), blob[4:20].hex(), blob) for (eid, at, _old), blob in pairs]
    # one transaction for the batch, an event already there skipped (a rerun after a crash)
    return append_if_absent(rt, choose(env, "audit").backend, env.id, rows, point=point)


def _sealed_at(plain: bytes, at: datetime) -> bool:
    """Whether the event plaintext {"at": ..., "event": ...} holds this time."""
    prefix = b'{"at":' + json.dumps(at.isoformat()).encode() + b","
    if plain.startswith(prefix):
        return True
    try:
        return utc(datetime.fromisoformat(json.loads(plain)["at"])) == at
    except (ValueError, KeyError, TypeError):
        return False
