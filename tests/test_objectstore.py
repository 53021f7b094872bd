"""The S3 object store on the embedded SeaweedFS: verified writes, clear errors."""

from __future__ import annotations

import hashlib
import os

import pytest

from vigil.errors import NotFound, StorageError
from vigil.objectstore import S3ObjectStore, make_minio_client
from vigil.settings import Settings


def test_put_verifies_and_get_returns_the_same_bytes(store: S3ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    stored = store.put("chunks/1/0001.vch", data)
    assert stored.size_bytes == len(data)
    assert stored.sha256_hex == hashlib.sha256(data).hexdigest()
    assert store.get("chunks/1/0001.vch") == data
    assert list(store.list("chunks/")) == ["chunks/1/0001.vch"]


def test_delete_removes_every_version(store: S3ObjectStore, settings: Settings) -> None:
    store.put("a/b", b"one")
    store.put("a/b", b"two")  # a second version in the object-lock (versioned) bucket
    store.delete("a/b")
    with pytest.raises(NotFound):
        store.get("a/b")
    client = make_minio_client(settings)
    versions = list(client.list_objects(settings.s3_bucket, prefix=store._full("a/b"),
                                        include_version=True))
    assert versions == []


def test_missing_objects_and_bad_keys_are_named(store: S3ObjectStore) -> None:
    with pytest.raises(NotFound, match="object nope does not exist"):
        store.get("nope")
    for key in ("", "/abs", "a/../b"):
        with pytest.raises(StorageError, match="invalid object key"):
            store.put(key, b"x")


def test_the_bucket_has_object_lock_enabled(settings: Settings) -> None:
    config = make_minio_client(settings).get_object_lock_config(settings.s3_bucket)
    assert config is not None


def test_wrong_credentials_are_refused_without_echoing_them(settings: Settings) -> None:
    wrong = settings.model_copy(update={"s3_endpoint": settings.s3_credentials()[0],
                                        "s3_access_key": settings.embedded_secrets()
                                        .s3_access_key,
                                        "s3_secret_key": type(settings.embedded_secrets()
                                                              .s3_secret_key)("Wr0ng-Secret-Value")})
    bad = S3ObjectStore.from_settings(wrong, prefix="test/wrong/")
    with pytest.raises(StorageError) as info:
        bad.put("x", b"x")
    assert "Wr0ng-Secret-Value" not in str(info.value)
    assert "SignatureDoesNotMatch" in str(info.value) or "AccessDenied" in str(info.value)


def test_deleting_twice_leaves_nothing_behind(store: S3ObjectStore, settings: Settings) -> None:
    store.put("twice", b"x")
    store.delete("twice")
    store.delete("twice")  # idempotent: no delete marker is created for a gone key
    client = make_minio_client(settings)
    assert list(client.list_objects(settings.s3_bucket, prefix=store._full("twice"),
                                    include_version=True)) == []


def test_an_unreachable_store_is_a_storage_error(settings: Settings) -> None:
    from tests.support import free_ports

    (port,) = free_ports(1)
    gone = settings.model_copy(update={
        "s3_endpoint": f"http://127.0.0.1:{port}",
        "s3_access_key": settings.embedded_secrets().s3_access_key,
        "s3_secret_key": settings.embedded_secrets().s3_secret_key})
    store = S3ObjectStore(make_minio_client(gone, timeout_s=2), settings.s3_bucket, "t/")
    for operation in (lambda: store.put("k", b"x"), lambda: store.get("k"),
                      lambda: list(store.list())):
        with pytest.raises(StorageError, match="unreachable"):
            operation()


def test_put_file_streams_and_verifies(store: S3ObjectStore, tmp_path) -> None:
    data = os.urandom(9 * 1024 * 1024 + 5)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    stored = store.put_file("big/one", path, sha256_hex=digest)
    assert stored.size_bytes == len(data)
    assert store.sha256_of("big/one") == digest
    from vigil.errors import IntegrityError

    with pytest.raises(IntegrityError, match="not the"):
        store.put_file("big/two", path, sha256_hex="0" * 64)  # a wrong claimed hash


def test_put_stream_hashes_what_it_sends_and_verifies(store: S3ObjectStore) -> None:
    import io

    from vigil.errors import IntegrityError

    data = os.urandom(9 * 1024 * 1024 + 5)
    stored = store.put_stream("big/streamed", io.BytesIO(data), len(data))
    assert stored.size_bytes == len(data)
    assert stored.sha256_hex == hashlib.sha256(data).hexdigest()
    assert store.get("big/streamed") == data
    with pytest.raises(IntegrityError, match="ended after"):
        store.put_stream("big/short", io.BytesIO(data[:-10]), len(data))  # runs dry


def test_delete_many_removes_every_version_and_delete_marker_of_the_keys_only(
        store: S3ObjectStore) -> None:
    day = "chunks/7/2026/01/02/"
    keys = [f"{day}{seq:020d}-{os.urandom(4).hex()}.vch" for seq in range(5)]
    for key in keys:
        store.put(key, b"first")
        store.put(key, b"second")  # two versions of each
    client, bucket = store._client, store._bucket
    client.remove_object(bucket, store._full(keys[1]))  # a plain delete: a delete marker
    assert store.delete_many([*keys[:3], f"{day}not-there.vch"]) == {}
    left = {o.object_name for o in client.list_objects(
        bucket, prefix=store._full(day), include_version=True, recursive=True)}
    assert left == {store._full(k) for k in keys[3:]}
