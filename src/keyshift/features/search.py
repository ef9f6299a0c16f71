"""Blind search index over the JSON fields a table declares searchable.

* Tokens: words are NFKC-normalized, case-folded and split on non-word characters; each word becomes
  HMAC-SHA256(k_table, word)[:16] where k_table = HKDF-SHA256(search DEK, info = "keyshift/search/v1"
  + the (tenant, environment, "search", table) associated-data encoding). The search DEK is a DEK of
  store "search", wrapped by the environment's KEK like every other DEK. Postings hold only
  (index generation, token, record id); no word, value or field name is stored in plaintext.
* Generations: a table's index is a sequence of generations (fields + search DEK). Queries use the
  `active` one; writes go to every live one (`active` and `building`), so a rebuild (new fields, or a
  new search key after a swap / re-encryption) fills a `building` generation as a job while the
  active one keeps answering, then takes over (keyshift.features.search_jobs).
* Kept in step with writes: `record_write_hook` is called by the records store before each write
  (outside the transaction: it may need the vault) and returns a function the store runs inside the
  write's transaction, so a record and its postings commit together.
* Queries: every word must match (AND). Results are record ids, fetched and decrypted through the
  records store. Leakage is documented in docs/SEARCH.md.
"""

from __future__ import annotations

import hmac
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Table, func, intersect, select
from sqlalchemy.orm import Session

from keyshift.crypto.dek import DataKey
from keyshift.crypto.records import AssociatedData
from keyshift.db.engine import read_transaction
from keyshift.db.models import DataRecord, SearchIndex, SearchPosting
from keyshift.errors import ConflictError, IntegrityError, UsageError
from keyshift.features.common import SEARCH, usable_env
from keyshift.runtime import Runtime
from keyshift.stores.envstate import EnvView, env_states
from keyshift.stores.keys import data_keys
from keyshift.stores.records import Record, decode_value, validate_table
from keyshift.stores.records_sql import executemany, in_session

STORE = "search"
TOKEN_LEN = 16
MAX_WORD = 64
MAX_FIELDS = 32
MAX_QUERY_WORDS = 16
MAX_LIMIT = 1000
LIVE = ("building", "active")
FIELD_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,63}){0,3}\Z")
_WORD = re.compile(r"\w+", re.UNICODE)
_IN_CHUNK = 500
_EXT = "keyshift.features.search"

# A declarative model's `__table__` is typed as a FromClause; for these models it is a Table.
_P = cast(Table, SearchPosting.__table__)
_R = cast(Table, DataRecord.__table__)


def words(text: str) -> list[str]:
    """Normalized words of a text, in order of first appearance, without repeats."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    return list(dict.fromkeys(w for w in _WORD.findall(norm) if len(w) <= MAX_WORD))


def _values(value: Any, path: list[str]) -> Iterable[Any]:
    if not path:
        yield value
        return
    if isinstance(value, dict) and path[0] in value:
        yield from _values(value[path[0]], path[1:])
    elif isinstance(value, list):
        for item in value:
            yield from _values(item, path)


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def extract(value: Any, fields: list[str]) -> set[str]:
    """Normalized words of the searchable fields of a record value (nested with dots, lists flattened)."""
    out: set[str] = set()
    if not isinstance(value, dict):
        return out
    for f in fields:
        for v in _values(value, f.split(".")):
            for text in _texts(v):
                out.update(words(text))
    return out


def validate_fields(fields: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(f.strip() for f in fields if f and f.strip()))
    if not out:
        raise UsageError("name at least one searchable field", code="invalid_fields")
    if len(out) > MAX_FIELDS:
        raise UsageError(f"at most {MAX_FIELDS} searchable fields per table", code="invalid_fields")
    for f in out:
        if not FIELD_RE.match(f):
            raise UsageError(
                f"invalid field name {f!r}: letters, digits, '_' or '-', nested with '.' (up to 4 levels)",
                code="invalid_fields",
            )
    return out


# -- keys ------------------------------------------------------------------------------------


class _Keys:
    """Per-runtime derived table keys, rebuilt whenever the DEK cache hands out another key object."""

    def __init__(self, rt: Runtime) -> None:
        self.lock = threading.Lock()
        self.derived: dict[tuple[str, str, str], tuple[DataKey, bytes]] = {}
        # Dropped with the DEK cache when an environment turns unusable (revocation, lock).
        env_states(rt).on_unusable.append(self.flush)

    def flush(self, env_id: str | None = None) -> None:
        with self.lock:
            for k in [k for k in self.derived if env_id is None or k[0] == env_id]:
                del self.derived[k]


def table_key(rt: Runtime, env: EnvView, table: str, dek_hex: str) -> bytes:
    dek = data_keys(rt).key_for(rt, env, STORE, bytes.fromhex(dek_hex))
    cache: _Keys = rt.extension(_EXT, _Keys)
    k = (env.id, table, dek_hex)
    with cache.lock:
        hit = cache.derived.get(k)
        if hit is not None and hit[0] is dek:
            return hit[1]
    info = b"keyshift/search/v1" + AssociatedData(env.tenant_id, env.id, STORE, table, "").encode()
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(dek.key)
    with cache.lock:
        if len(cache.derived) > 4096:
            cache.derived.clear()
        cache.derived[k] = (dek, derived)
    return derived


def tokens(key: bytes, ws: Iterable[str]) -> set[bytes]:
    return {hmac.digest(key, w.encode("utf-8"), "sha256")[:TOKEN_LEN] for w in ws}


# -- index rows --------------------------------------------------------------------------------


def live_indexes(s: Session, env_id: str, table: str) -> list[SearchIndex]:
    return list(
        s.scalars(
            select(SearchIndex)
            .where(
                SearchIndex.environment_id == env_id,
                SearchIndex.table_name == table,
                SearchIndex.state.in_(LIVE),
            )
            .order_by(SearchIndex.generation)
        )
    )


def replace_postings(s: Session, index_id: str, record_ids: list[str], rows: list[dict[str, Any]]) -> None:
    """Inside the caller's transaction: the postings of these records in one generation become `rows`.

    Plain DBAPI statements on the session's connection (one DELETE per 500 ids, one executemany of
    the INSERTs): no per-row bind processing.
    """
    conn = in_session(s)
    mark = "%s" if s.get_bind().dialect.name == "postgresql" else "?"
    for i in range(0, len(record_ids), _IN_CHUNK):
        part = record_ids[i : i + _IN_CHUNK]
        marks = ", ".join([mark] * len(part))
        conn.execute(
            f"DELETE FROM search_postings WHERE index_id = {mark} AND record_id IN ({marks})",
            (index_id, *part),
        )
    if rows:
        executemany(
            conn,
            f"INSERT INTO search_postings (index_id, token, record_id) VALUES ({mark}, {mark}, {mark})",
            [(r["index_id"], r["token"], r["record_id"]) for r in rows],
        )


def posting_rows(
    index_id: str, key: bytes, fields: list[str], items: Iterable[tuple[str, Any]]
) -> list[dict[str, Any]]:
    return [
        {"index_id": index_id, "token": t, "record_id": rid}
        for rid, value in items
        for t in tokens(key, extract(value, fields))
    ]


def record_write_hook(
    rt: Runtime, env: EnvView, table: str, changes: list[tuple[str, Any]]
) -> Callable[[Session], None] | None:
    """Called by the records store before a write; `changes` = [(record id, value or None = deleted)].

    Computes the new postings outside any transaction and returns the function the store runs
    inside the write's transaction (after the row write) to replace them.
    """
    if SEARCH not in env.features or not changes:
        return None
    with read_transaction(rt.sessions) as s:
        gens = [(g.id, list(g.fields), g.dek_id) for g in live_indexes(s, env.id, table)]
    if not gens:
        return None
    ids = list(dict.fromkeys(rid for rid, _ in changes))
    present = [(rid, v) for rid, v in changes if v is not None and not isinstance(v, bytes | bytearray)]
    prepared = [
        (gid, posting_rows(gid, table_key(rt, env, table, dek_hex), fields, present))
        for gid, fields, dek_hex in gens
    ]

    def apply(s: Session) -> None:
        live_now = set(
            s.scalars(
                select(SearchIndex.id).where(
                    SearchIndex.id.in_([g for g, _ in prepared]), SearchIndex.state.in_(LIVE)
                )
            )
        )
        for gid, rows in prepared:
            if gid in live_now:
                replace_postings(s, gid, ids, rows)

    return apply


# -- queries -----------------------------------------------------------------------------------


_I = cast(Table, SearchIndex.__table__)


def _live_rows(s: Session, env_id: str, table: str) -> list[Any]:
    """Live generations as plain rows (the query path avoids ORM overhead)."""
    return list(
        s.execute(
            select(_I.c.id, _I.c.generation, _I.c.state, _I.c.dek_id, _I.c.job_id)
            .where(_I.c.environment_id == env_id, _I.c.table_name == table, _I.c.state.in_(LIVE))
            .order_by(_I.c.generation)
        ).all()
    )


def _pick_active(gens: list[Any], env: EnvView, table: str) -> Any:
    active = [g for g in gens if g.state == "active"]
    if active:
        return active[-1]
    if gens:
        raise ConflictError(
            f"the search index of table {table!r} is still being built (job {gens[-1].job_id}); "
            "retry when it has finished",
            code="index_building",
        )
    raise ConflictError(
        f"table {table!r} of environment {env.name!r} has no searchable fields; "
        f"set them with `keyshift data search-fields {env.name} {table} FIELD,...`",
        code="no_searchable_fields",
    )


def fetch_records(rt: Runtime, env: EnvView, table: str, ids: list[str]) -> list[Record]:
    """Records by id (one query per 500 ids), decrypted through the records store's keys; in id order."""
    rows: list[Any] = []
    with rt.transaction() as s:
        for i in range(0, len(ids), _IN_CHUNK):
            rows += s.execute(_record_query(env.id, table, ids[i : i + _IN_CHUNK])).all()
    return decrypt_rows(rt, env, table, rows)


def _record_query(env_id: str, table: str, ids: list[str]) -> Any:
    return (
        select(_R.c.record_id, _R.c.value, _R.c.version, _R.c.updated_at)
        .where(_R.c.environment_id == env_id, _R.c.table_name == table, _R.c.record_id.in_(ids))
        .order_by(_R.c.record_id)
    )


def decrypt_rows(rt: Runtime, env: EnvView, table: str, rows: Iterable[Sequence[Any]]) -> list[Record]:
    keys = data_keys(rt)
    out = []
    for rid, blob, version, at in sorted(rows, key=lambda r: r[0]):
        blob = bytes(blob)
        try:
            if len(blob) < 20:
                raise IntegrityError("ciphertext is malformed")
            cipher = keys.decrypter(rt, env, "records", blob[4:20])
            plain = cipher.decrypt(blob, AssociatedData(env.tenant_id, env.id, "records", table, rid))
            value = decode_value(plain)
        except (IntegrityError, ValueError):
            raise IntegrityError(
                f"record {table}/{rid} of environment {env.name!r} failed authentication"
            ) from None
        out.append(Record(rid, value, version, at))
    return out


def search(rt: Runtime, env_ref: str, table: str, text: str, *, limit: int = 10) -> dict[str, Any]:
    """Records of `table` whose searchable fields hold every word of `text` (decrypted)."""
    validate_table(table)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_limit")
    if not isinstance(text, str):
        raise UsageError("search words are text", code="invalid_query")
    ws = words(text)
    if not ws:
        raise UsageError("the query holds no searchable word", code="invalid_query")
    if len(ws) > MAX_QUERY_WORDS:
        raise UsageError(f"a query holds at most {MAX_QUERY_WORDS} words", code="invalid_query")
    env = usable_env(rt, env_ref, SEARCH, "data.search")
    # One transaction: the active generation, the matching ids, their rows (a consistent answer).
    with rt.transaction() as s:
        index = _pick_active(_live_rows(s, env.id, table), env, table)
        # The table key may need the vault the first time: never inside this transaction.
        key = _cached_table_key(rt, env, table, index.dek_id)
        if key is None:
            rows = None
        else:
            ids = list(s.scalars(_match_query(index.id, sorted(tokens(key, ws)), limit)))
            rows = s.execute(_record_query(env.id, table, ids)).all() if ids else []
    if rows is None:
        key = table_key(rt, env, table, index.dek_id)
        with rt.transaction() as s:
            ids = list(s.scalars(_match_query(index.id, sorted(tokens(key, ws)), limit)))
            rows = s.execute(_record_query(env.id, table, ids)).all() if ids else []
    results = [r.to_dict() for r in decrypt_rows(rt, env, table, rows)]
    return {"table": table, "generation": index.generation, "count": len(results), "results": results}


def _cached_table_key(rt: Runtime, env: EnvView, table: str, dek_hex: str) -> bytes | None:
    """The derived table key if its DEK is in this process's cache (no vault call), else None."""
    if data_keys(rt).cache.get(env.id, bytes.fromhex(dek_hex)) is None:
        return None
    return table_key(rt, env, table, dek_hex)


def _match_query(index_id: str, toks: list[bytes], limit: int) -> Any:
    """Record ids holding every token, in id order, at most `limit`."""
    if len(toks) == 1:
        return (
            select(_P.c.record_id)
            .where(_P.c.index_id == index_id, _P.c.token == toks[0])
            .order_by(_P.c.record_id)
            .limit(limit)
        )
    # An INTERSECT of per-token lookups: each part walks the (index, token, record) key, never the
    # whole generation (a GROUP BY over record ids made SQLite scan every posting).
    parts = [select(_P.c.record_id).where(_P.c.index_id == index_id, _P.c.token == t) for t in toks]
    inter = intersect(*parts).subquery()
    return select(inter.c.record_id).order_by(inter.c.record_id).limit(limit)


def index_size(rt: Runtime, env_id: str) -> dict[str, Any]:
    """Postings of the environment's live generations and their approximate bytes."""
    with rt.transaction() as s:
        rows = s.execute(
            select(SearchIndex.table_name, SearchIndex.generation, SearchIndex.state, func.count(_P.c.token))
            .join(_P, _P.c.index_id == SearchIndex.id, isouter=True)
            .where(SearchIndex.environment_id == env_id, SearchIndex.state.in_(LIVE))
            .group_by(SearchIndex.table_name, SearchIndex.generation, SearchIndex.state)
            .order_by(SearchIndex.table_name, SearchIndex.generation)
        ).all()
    out = [{"table": t, "generation": g, "state": st, "postings": int(n)} for t, g, st, n in rows]
    return {"indexes": out, "postings": sum(r["postings"] for r in out)}
