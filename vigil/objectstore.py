"""The object store, behind a Protocol; the S3 implementation is chosen by config.

Every key is prefixed with ``settings.s3_prefix`` (tests give each test its own), and
every write is verified: ``put`` reads the stored object back and compares its size
and SHA-256 with what it wrote before it returns, so that a caller can commit a
catalog row that names the object (docs/design/storage.md).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import BinaryIO, Final, Protocol
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from vigil.errors import IntegrityError, NotFound, StorageError
from vigil.settings import Settings

# User metadata key holding the SHA-256 of an object's bytes, set on every put.
SHA256_META: Final = "x-amz-meta-vigil-sha256"
# Uploads up to this size are one PUT; larger ones go in parts of this size.
UPLOAD_PART_BYTES: Final = 64 * 1024 * 1024
# S3 DeleteObjects takes at most 1,000 keys.
DELETE_BATCH: Final = 1000
# Error codes with which a store refuses to delete a locked object version.
REFUSALS: Final = frozenset({"AccessDenied", "ObjectLocked", "InvalidRequest"})
READ_BLOCK_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class StoredObject:
    key: str
    size_bytes: int
    sha256_hex: str | None
    version_id: str | None


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> StoredObject: ...
    def put_file(self, key: str, path: Path, *, sha256_hex: str) -> StoredObject: ...
    def put_stream(self, key: str, data: BinaryIO, size: int) -> StoredObject: ...
    def get(self, key: str) -> bytes: ...
    def get_file(self, key: str, path: Path) -> int: ...
    def stat(self, key: str) -> StoredObject: ...
    def delete(self, key: str) -> None: ...
    def delete_many(self, keys: Sequence[str]) -> dict[str, str]: ...
    def set_legal_hold(self, key: str, *, on: bool) -> None: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...


def make_minio_client(settings: Settings, *, timeout_s: float = 30.0) -> Minio:
    endpoint, access_key, secret_key = settings.s3_credentials()
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StorageError("VIGIL_S3_ENDPOINT must be an http:// or https:// URL")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        retries=urllib3.Retry(total=0),
        maxsize=16,
    )
    return Minio(parts.netloc, access_key=access_key, secret_key=secret_key,
                 secure=parts.scheme == "https", region=settings.s3_region, http_client=http)


def ensure_bucket(settings: Settings) -> None:
    """Create the bucket, with S3 Object Lock enabled, if it does not exist yet.

    Object lock can only be switched on when a bucket is created, and evidence holds
    rely on it where the server supports it (docs/design/storage.md).
    """
    client = make_minio_client(settings)
    try:
        if not client.bucket_exists(settings.s3_bucket):
            client.make_bucket(settings.s3_bucket, object_lock=True)
    except S3Error as exc:
        raise StorageError(f"cannot create bucket {settings.s3_bucket!r}: {exc.code}") from exc


class S3ObjectStore:
    """ObjectStore on any S3-compatible server (SeaweedFS, MinIO, Ceph RGW, AWS)."""

    def __init__(self, client: Minio, bucket: str, prefix: str = "") -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings, *, prefix: str | None = None) -> S3ObjectStore:
        return cls(make_minio_client(settings), settings.s3_bucket,
                   settings.s3_prefix if prefix is None else prefix)

    def _full(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid object key {key!r}")
        return self._prefix + key

    def put(self, key: str, data: bytes) -> StoredObject:
        digest = hashlib.sha256(data).hexdigest()
        full = self._full(key)
        try:
            self._client.put_object(self._bucket, full, io.BytesIO(data), len(data),
                                    metadata={SHA256_META: digest})
        except S3Error as exc:
            raise StorageError(f"storing {key} failed: {exc.code}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"storing {key} failed: object store unreachable") from exc
        stored = self.stat(key)
        readback = hashlib.sha256(self.get(key)).hexdigest()
        if stored.size_bytes != len(data) or readback != digest:
            raise IntegrityError(
                f"{key}: the store holds {stored.size_bytes} bytes with hash "
                f"{readback}, not the {len(data)} bytes with hash {digest} written")
        return stored

    def put_file(self, key: str, path: Path, *, sha256_hex: str) -> StoredObject:
        """Store a file whose SHA-256 the caller computed while writing it; verify by
        hashing a streamed read-back, so memory stays flat for any size."""
        full = self._full(key)
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                self._client.put_object(self._bucket, full, f, size,
                                        metadata={SHA256_META: sha256_hex},
                                        part_size=UPLOAD_PART_BYTES)
        except S3Error as exc:
            raise StorageError(f"storing {key} failed: {exc.code}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"storing {key} failed: object store unreachable") from exc
        stored = self.stat(key)
        readback = self.sha256_of(key)
        if stored.size_bytes != size or readback != sha256_hex:
            raise IntegrityError(
                f"{key}: the store holds {stored.size_bytes} bytes with hash "
                f"{readback}, not the {size} bytes with hash {sha256_hex} written")
        return stored

    def put_stream(self, key: str, data: BinaryIO, size: int) -> StoredObject:
        """Store ``size`` bytes read from ``data`` (which may produce them as it is read:
        a sealing reader), hashing them on the way; verify by a streamed read-back.
        No hash travels as metadata: it is known only once the last byte is sent. The
        result's ``sha256_hex`` is that of the bytes sent, as read back."""
        full = self._full(key)
        source = _HashingReader(data)
        try:
            self._client.put_object(self._bucket, full, source, size,
                                    part_size=UPLOAD_PART_BYTES)
        except S3Error as exc:
            raise StorageError(f"storing {key} failed: {exc.code}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"storing {key} failed: object store unreachable") from exc
        except OSError as exc:
            if source.bytes < size:  # the client's own check: the data ran out
                raise IntegrityError(f"storing {key} failed: the data to store ended "
                                     f"after {source.bytes} of {size} bytes") from exc
            raise StorageError(f"storing {key} failed: {type(exc).__name__}") from exc
        sent = source.digest.hexdigest()
        stored = self.stat(key)
        readback = self.sha256_of(key)
        if source.bytes != size or stored.size_bytes != size or readback != sent:
            raise IntegrityError(
                f"{key}: the store holds {stored.size_bytes} bytes with hash {readback}, "
                f"not the {source.bytes} bytes with hash {sent} sent")
        return replace(stored, sha256_hex=sent)

    def sha256_of(self, key: str) -> str:
        """SHA-256 of an object's bytes, streamed."""
        full = self._full(key)
        digest = hashlib.sha256()
        try:
            response = self._client.get_object(self._bucket, full)
            try:
                for block in response.stream(READ_BLOCK_BYTES):
                    digest.update(block)
            finally:
                response.close()
                response.release_conn()
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise NotFound(f"object {key} does not exist") from exc
            raise StorageError(f"reading {key} failed: {exc.code}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"reading {key} failed: object store unreachable") from exc
        return digest.hexdigest()

    def _open(self, key: str) -> urllib3.BaseHTTPResponse:
        try:
            return self._client.get_object(self._bucket, self._full(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise NotFound(f"object {key} does not exist") from exc
            raise StorageError(f"reading {key} failed: {exc.code}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"reading {key} failed: object store unreachable") from exc

    def get(self, key: str) -> bytes:
        response = self._open(key)
        try:
            return response.read()
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"reading {key} failed: object store unreachable") from exc
        finally:
            response.close()
            response.release_conn()

    def get_file(self, key: str, path: Path) -> int:
        """Stream ``key`` into ``path`` (objects too big for memory); returns the size."""
        response = self._open(key)
        size = 0
        try:
            with open(path, "wb") as out:
                for block in response.stream(READ_BLOCK_BYTES):
                    out.write(block)
                    size += len(block)
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"reading {key} failed: object store unreachable") from exc
        finally:
            response.close()
            response.release_conn()
        return size

    def stat(self, key: str) -> StoredObject:
        full = self._full(key)
        try:
            info = self._client.stat_object(self._bucket, full)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                raise NotFound(f"object {key} does not exist") from exc
            raise StorageError(f"inspecting {key} failed: {exc.code}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"inspecting {key} failed: object store unreachable") from exc
        meta = {k.lower(): v for k, v in (info.metadata or {}).items()}
        return StoredObject(key=key, size_bytes=int(info.size or 0),
                            sha256_hex=meta.get(SHA256_META), version_id=info.version_id)

    def delete(self, key: str) -> None:
        """Delete every version of ``key``: on a versioned (object-lock) bucket a
        plain delete only hides the bytes behind a delete marker."""
        full = self._full(key)
        try:
            versions = [o.version_id for o in self._client.list_objects(
                self._bucket, prefix=full, include_version=True) if o.object_name == full]
            # No versions: already gone. A plain DELETE would add a delete marker.
            for version_id in versions:
                self._client.remove_object(self._bucket, full, version_id=version_id)
        except S3Error as exc:
            raise StorageError(f"deleting {key} failed: {exc.code}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"deleting {key} failed: object store unreachable") from exc

    def delete_many(self, keys: Sequence[str]) -> dict[str, str]:
        """Delete every version of each key, up to a thousand per request (S3
        DeleteObjects). Returns the keys the store refused, with its error code (an
        object lock: ``AccessDenied``); keys already gone are not errors. Raises
        StorageError for an outage.

        The versions (and any delete markers) are found by listing, per directory, the
        keys under the longest prefix the batch's keys share there, from just before the
        first: chunk keys sort by zero-padded seq within a day, so a batch of aligned
        seqs (the sweeper's) is listed in about one request per thousand keys."""
        wanted = sorted({self._full(k) for k in keys})
        targets: list[DeleteObject] = []
        refused: dict[str, str] = {}
        try:
            for _directory, group in groupby(wanted, key=lambda f: f.rsplit("/", 1)[0]):
                names = list(group)
                members = set(names)
                for obj in self._client.list_objects(
                        self._bucket, prefix=os.path.commonprefix(names),
                        include_version=True, start_after=_just_before(names[0])):
                    if obj.object_name in members:
                        targets.append(DeleteObject(obj.object_name, obj.version_id))
            for start in range(0, len(targets), DELETE_BATCH):
                for error in self._client.remove_objects(
                        self._bucket, targets[start:start + DELETE_BATCH]):
                    if error.code in ("NoSuchKey", "NoSuchVersion"):
                        continue
                    if error.code not in REFUSALS:
                        raise StorageError(f"deleting {error.name} failed: {error.code}")
                    refused[(error.name or "")[len(self._prefix):]] = error.code
        except S3Error as exc:
            raise StorageError(f"deleting {len(wanted)} objects failed: {exc.code}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"deleting {len(wanted)} objects failed: object store "
                               "unreachable") from exc
        return refused

    def set_legal_hold(self, key: str, *, on: bool) -> None:
        """Switch the S3 legal hold of every version of ``key`` on or off."""
        full = self._full(key)
        try:
            for obj in self._client.list_objects(self._bucket, prefix=full,
                                                 include_version=True):
                if obj.object_name != full or obj.is_delete_marker:
                    continue
                if on:
                    self._client.enable_object_legal_hold(self._bucket, full,
                                                          version_id=obj.version_id)
                else:
                    self._client.disable_object_legal_hold(self._bucket, full,
                                                           version_id=obj.version_id)
        except S3Error as exc:
            raise StorageError(f"setting the legal hold of {key} failed: {exc.code}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"setting the legal hold of {key} failed: object store "
                               "unreachable") from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        try:
            for obj in self._client.list_objects(self._bucket, prefix=self._prefix + prefix,
                                                 recursive=True):
                assert obj.object_name is not None
                yield obj.object_name[len(self._prefix):]
        except S3Error as exc:
            raise StorageError(f"listing {prefix!r} failed: {exc.code}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(f"listing {prefix!r} failed: object store unreachable") from exc


def _just_before(key: str) -> str:
    """A marker that sorts before ``key`` and after nothing that matters: ``key`` with
    its last character lowered by one and the highest ASCII character appended."""
    return key[:-1] + chr(ord(key[-1]) - 1) + "\x7f" if key and key[-1] > "\x00" else ""


def get_object_store(settings: Settings) -> ObjectStore:
    """The configured store. S3 is the only backend today; the Protocol is the seam."""
    return S3ObjectStore.from_settings(settings)


class _HashingReader:
    """Passes reads through, hashing and counting what it hands on."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.digest = hashlib.sha256()
        self.bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        self.digest.update(data)
        self.bytes += len(data)
        return data
