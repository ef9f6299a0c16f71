"""Files on S3-compatible storage, against moto's real HTTP server (tests/servers.py)."""

from __future__ import annotations

import io
import secrets
from typing import Any

import pytest

from keyshift.errors import IntegrityError, NotFoundError
from keyshift.runtime import Runtime
from keyshift.stores.files import FileStore
from stores.helpers import Pattern, make_env


@pytest.fixture
def s3(sqlite_rt: Runtime, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Runtime, Any, str]:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"ks-{secrets.token_hex(4)}"
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    rt = sqlite_rt
    rt.settings = rt.settings.model_copy(
        update={"file_store_url": f"s3://{bucket}/tenant-files", "file_store_endpoint": moto_endpoint}
    )
    return rt, client, bucket


def _objects(client: Any, bucket: str) -> dict[str, bytes]:
    out = {}
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def test_put_get_list_delete_on_s3(s3: tuple[Runtime, Any, str]) -> None:
    rt, client, bucket = s3
    fs = FileStore(rt, make_env(rt))
    fs.put("img/logo.png", b"secret-png-bytes")
    fs.put("docs/big.bin", Pattern(20 << 20))  # > 2 parts of 8 MiB: multipart upload
    assert fs.get("img/logo.png") == b"secret-png-bytes"
    check = Pattern(20 << 20)
    with fs.open("docs/big.bin") as f:
        assert f.read() == check.read()
    assert fs.list() == [{"path": "docs/big.bin", "size": 20 << 20}, {"path": "img/logo.png", "size": 16}]
    assert fs.list("img") == [{"path": "img/logo.png", "size": 16}]
    objects = _objects(client, bucket)
    assert sorted(objects) == [
        f"tenant-files/{fs.env_id}/docs/big.bin",
        f"tenant-files/{fs.env_id}/img/logo.png",
    ]
    assert all(b"secret-png" not in body for body in objects.values())
    fs.delete("img/logo.png")
    with pytest.raises(NotFoundError):
        fs.get("img/logo.png")
    with pytest.raises(NotFoundError):
        fs.delete("img/logo.png")
    assert not (rt.settings.home_path() / "files" / fs.env_id).exists()  # nothing went to the directory


def test_failed_upload_leaves_nothing_behind(s3: tuple[Runtime, Any, str]) -> None:
    rt, client, bucket = s3
    fs = FileStore(rt, make_env(rt))
    fs.put("keep.bin", b"old")

    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            super().__init__()
            self.src = Pattern(40 << 20)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            if self.src.left < 15 << 20:
                raise OSError("source went away")
            return self.src.readinto(b)

    before = _objects(client, bucket)
    with pytest.raises(OSError):
        fs.put("keep.bin", Failing())
    assert _objects(client, bucket) == before
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert fs.get("keep.bin") == b"old"


def test_tampered_object_is_an_integrity_error_naming_the_path(s3: tuple[Runtime, Any, str]) -> None:
    rt, client, bucket = s3
    fs = FileStore(rt, make_env(rt))
    fs.put("a.txt", b"A" * 10_000)
    key = f"tenant-files/{fs.env_id}/a.txt"
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body[:-100])  # truncated
    with pytest.raises(IntegrityError) as err:
        fs.get("a.txt")
    assert "a.txt" in err.value.message


def test_exists_asks_head_not_get(s3: tuple[Runtime, Any, str]) -> None:
    from keyshift.stores.file_backends import backend

    rt, _client, _bucket = s3
    fs = FileStore(rt, make_env(rt))
    fs.put("a/b.bin", b"abc")
    b: Any = backend(rt, "file_storage")
    calls: list[str] = []
    b.client.meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name))
    assert b.exists(fs.env_id, "a/b.bin")
    assert not b.exists(fs.env_id, "a/c.bin") and not b.exists(fs.env_id, "a")
    assert calls == ["HeadObject"] * 3
