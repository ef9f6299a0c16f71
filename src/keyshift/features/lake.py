"""Data lake: exports of a table to Parquet with Parquet modular encryption, in file storage.

The files are standard encrypted Parquet (encrypted footer, every column encrypted with the footer
key, double wrapping): any Parquet reader with modular encryption support reads them when given the
matching KMS client, and nothing else can. Our KMS client (`VaultKmsClient`) wraps Parquet's key-
encryption keys with the environment's "lake" DEK — itself wrapped by the environment's KEK in its
vault and unwrapped through the vault layer as the environment's identity — using the documented
record format (AES-256-GCM, associated data = tenant, environment, "lake", "kms", master key id).
So a key change (link, swap, rotation, unlink) rewraps the lake DEK with the environment's other
DEKs and every exported file follows without being rewritten; a revoked key makes them unreadable.

Each export or read builds its own CryptoFactory, so Parquet's own key cache never outlives one
operation (the DEK cache bounds stay the only ones).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, BinaryIO

from sqlalchemy import select

from keyshift.extras import MissingExtraError

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyarrow.parquet.encryption as pe
except ImportError:  # importing this module without the extra is the typed error, not a traceback
    raise MissingExtraError("the data lake", "lake") from None

from keyshift.control import audit_trail
from keyshift.crypto.dek import Keyring
from keyshift.crypto.records import AssociatedData, RecordCipher
from keyshift.db.models import LakeExport
from keyshift.db.types import new_id
from keyshift.errors import IntegrityError, KeyshiftError, NotFoundError, UsageError
from keyshift.features.common import LAKE, namespace, objects, usable_env
from keyshift.runtime import Runtime
from keyshift.stores.envstate import EnvView
from keyshift.stores.files import validate_path
from keyshift.stores.keys import data_keys
from keyshift.stores.records import RecordStore, validate_table
from keyshift.timefmt import iso_z

STORE = "lake"
MASTER_PREFIX = "keyshift-lake-"
ROW_GROUP = 64 * 1024
MAX_READ_ROWS = 100_000
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("version", pa.int64()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("value", pa.string()),
    ]
)


class VaultKmsClient(pe.KmsClient):  # type: ignore[misc]
    """Parquet KMS client: wraps Parquet's keys under the environment's lake DEK (vault-wrapped)."""

    def __init__(self, rt: Runtime, env: EnvView) -> None:
        super().__init__()
        self.rt, self.env = rt, env
        self.error: KeyshiftError | None = None

    def _ad(self, master_key_identifier: str) -> AssociatedData:
        return AssociatedData(self.env.tenant_id, self.env.id, STORE, "kms", master_key_identifier)

    def _dek(self, master_key_identifier: str, dek_id: bytes | None = None) -> Any:
        if not master_key_identifier.startswith(MASTER_PREFIX):
            raise IntegrityError("unknown lake master key")
        try:
            want = bytes.fromhex(master_key_identifier[len(MASTER_PREFIX) :])
        except ValueError:
            raise IntegrityError("unknown lake master key") from None
        if len(want) != 16 or (dek_id is not None and dek_id != want):
            raise IntegrityError("unknown lake master key")
        return data_keys(self.rt).key_for(self.rt, self.env, STORE, want)

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        try:
            dek = self._dek(master_key_identifier)
            blob = RecordCipher(Keyring(dek)).encrypt(bytes(key_bytes), self._ad(master_key_identifier))
            return base64.b64encode(blob).decode("ascii")
        except KeyshiftError as err:
            self.error = err
            raise

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        try:
            try:
                blob = base64.b64decode(wrapped_key, validate=True)
            except ValueError:
                raise IntegrityError("malformed wrapped key") from None
            if len(blob) < 20:
                raise IntegrityError("malformed wrapped key")
            dek = self._dek(master_key_identifier, bytes(blob[4:20]))
            return RecordCipher(Keyring(dek)).decrypt(blob, self._ad(master_key_identifier))
        except KeyshiftError as err:
            self.error = err
            raise


def crypto_factory(
    rt: Runtime, env: EnvView
) -> tuple[pe.CryptoFactory, pe.KmsConnectionConfig, list[VaultKmsClient]]:
    clients: list[VaultKmsClient] = []

    def make(_config: Any) -> VaultKmsClient:
        client = VaultKmsClient(rt, env)
        clients.append(client)
        return client

    config = pe.KmsConnectionConfig(custom_kms_conf={"environment": env.id})
    return pe.CryptoFactory(make), config, clients


def encryption_properties(rt: Runtime, env: EnvView, dek_hex: str) -> tuple[Any, list[VaultKmsClient]]:
    factory, config, clients = crypto_factory(rt, env)
    ec = pe.EncryptionConfiguration(
        footer_key=MASTER_PREFIX + dek_hex,
        uniform_encryption=True,
        plaintext_footer=False,
        double_wrapping=True,
        data_key_length_bits=256,
        cache_lifetime=timedelta(seconds=max(1.0, rt.settings.dek_cache_max_age_seconds)),
    )
    return factory.file_encryption_properties(config, ec), clients


def decryption_properties(rt: Runtime, env: EnvView) -> tuple[Any, list[VaultKmsClient]]:
    factory, config, clients = crypto_factory(rt, env)
    dc = pe.DecryptionConfiguration(
        cache_lifetime=timedelta(seconds=max(1.0, rt.settings.dek_cache_max_age_seconds))
    )
    return factory.file_decryption_properties(config, dc), clients


def _kms_error(clients: list[VaultKmsClient]) -> KeyshiftError | None:
    for c in clients:
        if c.error is not None:
            return c.error
    return None


class _Counting:
    """Counts bytes written through to the storage sink."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink, self.size, self.closed = sink, 0, False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sink.write(view)
        self.size += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def record_batches(store: RecordStore, table: str, size: int = ROW_GROUP) -> Iterator[pa.RecordBatch]:
    cols: dict[str, list[Any]] = {"id": [], "version": [], "updated_at": [], "value": []}
    for rec in store.iter_all(table):
        value = rec.value
        if isinstance(value, bytes):
            value = {"$bytes": value.hex()}
        cols["id"].append(rec.id)
        cols["version"].append(rec.version)
        cols["updated_at"].append(rec.updated_at)
        cols["value"].append(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        if len(cols["id"]) >= size:
            yield pa.RecordBatch.from_pydict(cols, schema=SCHEMA)
            cols = {k: [] for k in cols}
    if cols["id"]:
        yield pa.RecordBatch.from_pydict(cols, schema=SCHEMA)


def write_parquet(batches: Iterator[pa.RecordBatch], sink: Any, properties: Any | None) -> int:
    """Write record batches as Parquet (encrypted when `properties` is given); returns the rows."""
    rows = 0
    with pq.ParquetWriter(sink, SCHEMA, encryption_properties=properties, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch, row_group_size=ROW_GROUP)
            rows += batch.num_rows
    return rows


def export_table(rt: Runtime, env_ref: str, table: str) -> dict[str, Any]:
    """Export every record of a table to an encrypted Parquet file in the environment's lake."""
    validate_table(table)
    env = usable_env(rt, env_ref, LAKE, "lake.export")
    store = RecordStore(rt, env.id)
    store.scan(table, limit=1)  # table_not_found before anything is written
    dek, _ = data_keys(rt).primary(rt, env, STORE)
    dek_hex = dek.id.hex()
    stamp = rt.clock.now().strftime("%Y%m%dT%H%M%S")
    path = f"{table}/{stamp}-{secrets.token_hex(4)}.parquet"
    props, clients = encryption_properties(rt, env, dek_hex)
    counted: dict[str, int] = {}

    def produce(sink: BinaryIO) -> int:
        out = _Counting(sink)
        try:
            counted["rows"] = write_parquet(record_batches(store, table), out, props)
        except KeyshiftError:
            raise
        except Exception:
            raise _kms_error(clients) or IntegrityError("the Parquet export could not be written") from None
        return out.size

    try:
        size = objects(rt).write(namespace(env.id, "lake"), path, produce, dek_hex)
    except KeyshiftError as err:
        audit_trail.record_failure(
            rt, "lake.export", err, target_type="environment", target_id=env.id, tenant_id=env.tenant_id
        )
        raise
    created_at = rt.clock.now()
    with rt.transaction() as s:
        s.add(
            LakeExport(
                id=new_id("lkx"),
                environment_id=env.id,
                table_name=table,
                path=path,
                rows=counted["rows"],
                size=size,
                dek_id=dek_hex,
                created_at=created_at,
            )
        )
        audit_trail.record(
            rt,
            s,
            "lake.export",
            target_type="environment",
            target_id=env.id,
            tenant_id=env.tenant_id,
            details={"table": table, "path": path, "rows": counted["rows"], "size": size},
        )
    return {
        "path": path,
        "table": table,
        "rows": counted["rows"],
        "size": size,
        "created_at": iso_z(created_at),
    }


def list_exports(rt: Runtime, env_ref: str) -> list[dict[str, Any]]:
    env = usable_env(rt, env_ref, LAKE, "lake.list")
    with rt.transaction() as s:
        rows = s.scalars(
            select(LakeExport).where(LakeExport.environment_id == env.id).order_by(LakeExport.created_at)
        )
        return [
            {
                "path": r.path,
                "table": r.table_name,
                "rows": r.rows,
                "size": r.size,
                "created_at": iso_z(r.created_at),
            }
            for r in rows
        ]


def open_raw(rt: Runtime, env: EnvView, path: str) -> bytes:
    """The stored (encrypted) Parquet bytes of an export."""
    src = objects(rt).open(namespace(env.id, "lake"), path)
    if src is None:
        raise NotFoundError(f"lake file {path!r} not found", code="lake_file_not_found")
    with src:
        return bytes(src.read())


def read_export(rt: Runtime, env_ref: str, path: str, *, limit: int = 1000) -> dict[str, Any]:
    """Read an export back (decrypting through the vault layer); at most `limit` rows."""
    validate_path(path)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_READ_ROWS:
        raise UsageError(f"limit must be between 1 and {MAX_READ_ROWS}", code="invalid_limit")
    env = usable_env(rt, env_ref, LAKE, "lake.read")
    with rt.transaction() as s:
        known = s.scalars(
            select(LakeExport.id).where(LakeExport.environment_id == env.id, LakeExport.path == path)
        ).first()
    if known is None:
        raise NotFoundError(f"lake file {path!r} not found", code="lake_file_not_found")
    data = open_raw(rt, env, path)
    props, clients = decryption_properties(rt, env)
    try:
        pf = pq.ParquetFile(pa.BufferReader(data), decryption_properties=props)
        total = pf.metadata.num_rows
        rows: list[dict[str, Any]] = []
        for batch in pf.iter_batches(batch_size=min(limit, ROW_GROUP)):
            for r in batch.to_pylist():
                rows.append({**r, "value": json.loads(r["value"])})
                if len(rows) >= limit:
                    break
            if len(rows) >= limit:
                break
    except KeyshiftError:
        raise
    except Exception:
        err = _kms_error(clients)
        if err is not None and not isinstance(err, IntegrityError):
            raise err from None
        raise IntegrityError(
            f"lake file {path!r} of environment {env.name!r} is corrupt or failed authentication"
        ) from None
    return {"path": path, "rows": total, "returned": len(rows), "records": rows}
