"""Keys: key-encryption keys that wrap chunk data keys, and Ed25519 signing keys.

Key material lives with a *provider*; the catalog's ``keys`` table records only
each key's identity (purpose, version, provider, reference) and, for signing keys,
the public key. ``FileKeyRing`` keeps keys as 0600 files in a 0700 directory for the
embedded stack; a KMS or Vault Transit provider implements the same Protocol.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.orm import Session

from vigil.catalog.models import DataKey, Key, KeyPurpose, KeyState
from vigil.errors import ConfigurationError, IntegrityError, NotFound

KEK_BYTES: Final = 32


class KeyUnavailable(IntegrityError):
    """A data key cannot be unwrapped: destroyed (shredded), or its KEK is missing."""

    code = "key_unavailable"


class KeyProvider(Protocol):
    name: str

    def create(self, purpose: KeyPurpose, version: int) -> str:
        """Create a key; return the reference under which the provider keeps it."""
        ...

    def wrap(self, ref: str, data_key: bytes) -> bytes: ...
    def unwrap(self, ref: str, wrapped: bytes) -> bytes: ...
    def signing_key(self, ref: str) -> Ed25519PrivateKey: ...


class FileKeyRing:
    """Keys as files: ``<dir>/<purpose>-v<version>.key``, mode 0600, dir 0700."""

    name = "file"

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def _path(self, ref: str) -> Path:
        if "/" in ref or ref.startswith("."):
            raise ConfigurationError(f"invalid key reference {ref!r}")
        return self._dir / f"{ref}.key"

    def create(self, purpose: KeyPurpose, version: int) -> str:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        ref = f"{purpose.value}-v{version}"
        material = (os.urandom(KEK_BYTES) if purpose is KeyPurpose.KEK
                    else Ed25519PrivateKey.generate().private_bytes_raw())
        # O_EXCL: a key file is written once and never replaced. One that exists already
        # was made by an attempt whose catalog row never committed (a crash, a rollback,
        # or a concurrent start whose row wins the unique version): nothing committed
        # uses it, so it is taken as it is rather than blocking every later start.
        try:
            fd = os.open(self._path(ref), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return ref
        with os.fdopen(fd, "wb") as f:
            f.write(material)
            f.flush()
            os.fsync(f.fileno())
        return ref

    def _read(self, ref: str) -> bytes:
        try:
            return self._path(ref).read_bytes()
        except FileNotFoundError:
            raise KeyUnavailable(f"key {ref} is missing from the key ring at {self._dir}") \
                from None

    def wrap(self, ref: str, data_key: bytes) -> bytes:
        return aes_key_wrap(self._read(ref), data_key)

    def unwrap(self, ref: str, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self._read(ref), wrapped)
        except InvalidUnwrap:
            raise KeyUnavailable(f"a data key does not unwrap under {ref}") from None

    def signing_key(self, ref: str) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._read(ref))


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_public(raw: bytes) -> Ed25519PublicKey:
    """A signing key's public half from the catalog's raw 32 bytes."""
    return Ed25519PublicKey.from_public_bytes(raw)


def active_key(*, session: Session, provider: KeyProvider, purpose: KeyPurpose) -> Key:
    """The active key for ``purpose``, created (version 1) if there is none yet."""
    row = session.scalars(select(Key).where(Key.purpose == purpose,
                                            Key.state == KeyState.ACTIVE)
                          .order_by(Key.version.desc()).limit(1)).first()
    if row is not None:
        return row
    latest = session.scalars(select(Key.version).where(Key.purpose == purpose)
                             .order_by(Key.version.desc()).limit(1)).first() or 0
    version = latest + 1
    ref = provider.create(purpose, version)
    row = Key(purpose=purpose, version=version, provider=provider.name, provider_ref=ref)
    if purpose is not KeyPurpose.KEK:
        public = public_bytes(provider.signing_key(ref).public_key())
        row.public_key = public
        row.fingerprint = hashlib.sha256(public).hexdigest()
    session.add(row)
    session.flush()
    return row


def new_data_key(*, session: Session, provider: KeyProvider, data_key: bytes) -> DataKey:
    """Wrap ``data_key`` under the active KEK and store it; flushes."""
    kek = active_key(session=session, provider=provider, purpose=KeyPurpose.KEK)
    row = DataKey(kek_id=kek.id, wrapped=provider.wrap(kek.provider_ref, data_key))
    session.add(row)
    session.flush()
    return row


def unwrap_data_key(*, session: Session, provider: KeyProvider, data_key_id: int) -> bytes:
    row = session.get(DataKey, data_key_id)
    if row is None:
        raise NotFound(f"data key {data_key_id} does not exist")
    if row.wrapped is None:
        raise KeyUnavailable(f"data key {data_key_id} was destroyed at "
                             f"{row.destroyed_at}: the chunk is unrecoverable")
    kek = session.get(Key, row.kek_id)
    assert kek is not None  # FK
    return provider.unwrap(kek.provider_ref, row.wrapped)


def file_key_ring(home: Path) -> FileKeyRing:
    return FileKeyRing(home / "keys")
