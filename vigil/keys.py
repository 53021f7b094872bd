"""Keys: key-encryption keys that wrap chunk data keys, and Ed25519 signing keys.

Key material lives with a *provider*; the catalog's ``keys`` table records only
each key's identity (purpose, version, provider, reference) and, for signing keys,
the public key. ``FileKeyRing`` keeps keys as 0600 files in a 0700 directory for the
embedded stack; a KMS or Vault Transit provider implements the same Protocol.

Rotation (docs/design/keys.md): ``rotate`` makes version n+1 active and retires
version n; ``rewrap_batch`` moves data keys from retired KEKs to the active one
(re-wrapping the key, never re-encrypting a chunk); ``destroy_unneeded_keks``
destroys the material of a retired KEK once no data key needs it. Signing keys are
never destroyed: their public halves stay published so that old signatures verify.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import exists, func, select, text
from sqlalchemy.orm import Session

from vigil import audit
from vigil.catalog.models import CameraLease, DataKey, Key, KeyPurpose, KeyState
from vigil.errors import ConfigurationError, Conflict, IntegrityError, InvalidInput, NotFound

KEK_BYTES: Final = 32

# The purposes that ``rotate`` accepts: those something signs or wraps with.
# (``audit_signing`` is reserved in the schema; nothing uses it yet.)
ROTATABLE: Final = (KeyPurpose.KEK, KeyPurpose.CHECKPOINT_SIGNING, KeyPurpose.PACKAGE_SIGNING,
                     KeyPurpose.AUDIT_SIGNING)

# A retired KEK's material is destroyed no sooner than this after its retirement,
# even when no data key in the catalog needs it: a recorder seals with the KEK that
# was active when it started (recorder.service.Sealer), and sealed chunks waiting in
# a spool through an outage carry data keys wrapped under it that reach the catalog
# only when they are committed. It also leaves time to restore a catalog backup taken
# before the re-wrap. (docs/design/keys.md, K6.)
KEK_DESTROY_GRACE: Final = timedelta(days=30)

# pg_try_advisory_xact_lock(class, purpose) serialises rotations of one purpose
# ("vgky"; the two-int key space does not overlap audit.py's single-bigint lock).
_ROTATE_LOCK_CLASS: Final = 0x76_67_6B_79


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

    def destroy(self, ref: str) -> None:
        """Destroy a key's material for good. Idempotent: an absent key is not an error."""
        ...


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

    def destroy(self, ref: str) -> None:
        """Overwrite the key file with zeros, then unlink it (and fsync the directory).

        The overwrite is best effort: on copy-on-write or flash storage, and in backups
        of the key directory, the old bytes may survive (docs/design/keys.md)."""
        path = self._path(ref)
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(path.stat().st_size))
            f.flush()
            os.fsync(f.fileno())
        path.unlink(missing_ok=True)
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_public(raw: bytes) -> Ed25519PublicKey:
    """A signing key's public half from the catalog's raw 32 bytes."""
    return Ed25519PublicKey.from_public_bytes(raw)


def _active_row(session: Session, purpose: KeyPurpose, *, for_share: bool = False
                ) -> Key | None:
    query = select(Key).where(Key.purpose == purpose, Key.state == KeyState.ACTIVE) \
        .order_by(Key.version.desc()).limit(1)
    return session.scalars(query.with_for_update(read=True) if for_share else query).first()


def active_key(*, session: Session, provider: KeyProvider, purpose: KeyPurpose) -> Key:
    """The active key for ``purpose``, created (version 1) if there is none yet."""
    row = _active_row(session, purpose)
    if row is not None:
        return row
    return _create(session=session, provider=provider, purpose=purpose)


def _create(*, session: Session, provider: KeyProvider, purpose: KeyPurpose) -> Key:
    """The next version of ``purpose``, active; flushes."""
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


# --- rotation ------------------------------------------------------------------------


def rotate(*, session: Session, provider: KeyProvider, purpose: KeyPurpose, actor: str,
           principal_id: int | None = None) -> Key:
    """Make a new version of ``purpose`` the active key and retire the one before it.

    1. Take the purpose's rotation lock without waiting: a second rotation while one
       is uncommitted raises ``Conflict`` rather than rotating twice.
    2. Create version n+1 with the provider, then retire version n (``retired_at``).
    3. Record ``keys.rotated`` (versions and, for signing keys, fingerprints).

    Flushes; the caller commits. Data keys are re-wrapped later (``rewrap_batch``)."""
    if purpose not in ROTATABLE:
        raise InvalidInput(f"keys of purpose {purpose.value!r} are not rotated; rotatable: "
                           f"{', '.join(p.value for p in ROTATABLE)}")
    locked = session.execute(text("SELECT pg_try_advisory_xact_lock(:c, :p)"),
                             {"c": _ROTATE_LOCK_CLASS,
                              "p": list(KeyPurpose).index(purpose)}).scalar_one()
    if not locked:
        raise Conflict(f"a rotation of the {purpose.value} key is already in progress")
    # FOR NO KEY UPDATE: waits for a re-wrap batch (FOR SHARE) but not for inserts of
    # data keys that reference the key (their foreign key check takes KEY SHARE).
    old = session.scalars(select(Key).where(Key.purpose == purpose,
                                            Key.state == KeyState.ACTIVE)
                          .with_for_update(key_share=True)).all()
    new = _create(session=session, provider=provider, purpose=purpose)
    for row in old:
        row.state, row.retired_at = KeyState.RETIRED, func.now()
    session.flush()
    previous = max(old, key=lambda k: k.version, default=None)
    detail: dict[str, object] = {
        "purpose": purpose.value, "new_version": new.version,
        "old_version": previous.version if previous is not None else None}
    if purpose is not KeyPurpose.KEK:
        detail["new_fingerprint"] = new.fingerprint
        detail["old_fingerprint"] = previous.fingerprint if previous is not None else None
    audit.record(session=session, actor=actor, action="keys.rotated",
                 principal_id=principal_id, target_type="key", target_id=str(new.id),
                 detail=detail)
    return new


def _needs_rewrap(active_kek_id: int):  # noqa: ANN202 - a SQL expression
    return (DataKey.wrapped.is_not(None)) & (DataKey.kek_id != active_kek_id)


def pending_rewrap(*, session: Session) -> int:
    """How many data keys are still wrapped under a KEK that is not the active one."""
    active = _active_row(session, KeyPurpose.KEK)
    if active is None:
        return 0
    return session.scalar(select(func.count()).select_from(DataKey)
                          .where(_needs_rewrap(active.id))) or 0


def rewrap_batch(*, session: Session, provider: KeyProvider, limit: int = 500) -> int:
    """Re-wrap up to ``limit`` data keys from retired KEKs under the active KEK.

    Rows are locked ``FOR UPDATE SKIP LOCKED`` (concurrent batches take different
    rows), unwrapped with their KEK, wrapped with the active one, checked by
    unwrapping again, and moved (``kek_id``). The active KEK's row is held ``FOR
    SHARE`` so that a rotation waits for the batch. No chunk object is touched.
    Flushes; the caller commits. Returns how many were re-wrapped (0: none left)."""
    active = _active_row(session, KeyPurpose.KEK, for_share=True)
    if active is None:
        return 0
    rows = session.scalars(select(DataKey).where(_needs_rewrap(active.id))
                           .order_by(DataKey.id).limit(limit)
                           .with_for_update(skip_locked=True)).all()
    if not rows:
        return 0
    refs = {k.id: k.provider_ref for k in session.scalars(
        select(Key).where(Key.id.in_(sorted({r.kek_id for r in rows}))))}
    for row in rows:
        assert row.wrapped is not None  # selected so
        try:
            data_key = provider.unwrap(refs[row.kek_id], row.wrapped)
        except KeyUnavailable as exc:
            raise KeyUnavailable(f"data key {row.id} cannot be re-wrapped: {exc}") from None
        wrapped = provider.wrap(active.provider_ref, data_key)
        if provider.unwrap(active.provider_ref, wrapped) != data_key:
            raise IntegrityError(f"data key {row.id}: the re-wrapped key does not unwrap "
                                 f"to the same key under {active.provider_ref}")
        row.wrapped, row.kek_id = wrapped, active.id
    session.flush()
    return len(rows)


def _needed(kek_id: object):  # noqa: ANN202 - a SQL expression
    """EXISTS a data key, not destroyed, wrapped under ``kek_id`` (a column or a value)."""
    return exists().where(DataKey.kek_id == kek_id, DataKey.wrapped.is_not(None))


def destroy_unneeded_keks(*, session: Session, provider: KeyProvider, actor: str,
                          principal_id: int | None = None,
                          grace: timedelta = KEK_DESTROY_GRACE) -> list[Key]:
    """Destroy the material of every retired KEK that nothing can need any more.

    A retired KEK is destroyed when (1) it was retired at least ``grace`` ago by the
    database's clock, (2) no live camera lease was taken before its retirement (that
    recorder may still seal with it), and (3), checked with its row locked ``FOR
    UPDATE`` so that no data key can be added under it meanwhile, no data key that
    is not itself destroyed references it. Then the provider destroys the material,
    the row becomes ``destroyed`` and ``keys.destroyed`` is recorded. Signing keys are
    never destroyed. A crash after the provider's destroy and before the commit leaves
    a retired row whose material is gone and which nothing needs; the next run
    destroys it again (idempotent) and records it. Flushes; the caller commits."""
    live_old_lease = exists().where(CameraLease.expires_at > func.now(),
                                    CameraLease.acquired_at < Key.retired_at)
    candidates = session.scalars(
        select(Key).where(Key.purpose == KeyPurpose.KEK, Key.state == KeyState.RETIRED,
                          Key.retired_at <= func.now() - grace, ~live_old_lease,
                          ~_needed(Key.id))
        .order_by(Key.version).with_for_update(skip_locked=True)).all()
    destroyed: list[Key] = []
    for key in candidates:
        # Re-checked under the row lock: a data key inserted under this KEK by a
        # transaction that committed after the candidates were read is seen now.
        if session.scalar(select(_needed(key.id))):
            continue
        provider.destroy(key.provider_ref)
        key.state, key.destroyed_at = KeyState.DESTROYED, func.now()
        session.flush()
        audit.record(session=session, actor=actor, action="keys.destroyed",
                     principal_id=principal_id, target_type="key", target_id=str(key.id),
                     detail={"purpose": key.purpose.value, "version": key.version})
        destroyed.append(key)
    return destroyed


# --- listings ------------------------------------------------------------------------


def data_keys_per_kek(*, session: Session) -> dict[int, int]:
    """KEK id -> how many data keys (not destroyed) are wrapped under it."""
    rows = session.execute(select(DataKey.kek_id, func.count())
                           .where(DataKey.wrapped.is_not(None)).group_by(DataKey.kek_id))
    return {kek_id: count for kek_id, count in rows}


def public_pem(raw: bytes) -> str:
    """A signing key's public half as PEM (SubjectPublicKeyInfo), as auditors load it."""
    return load_public(raw).public_bytes(Encoding.PEM,
                                         PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class Listed:
    """A key as listings show it; ``data_keys`` for KEKs only."""

    key: Key
    data_keys: int | None


def list_keys(*, session: Session) -> list[Listed]:
    """Every key of every state, by purpose then version, with the KEKs' data key counts."""
    counts = data_keys_per_kek(session=session)
    rows = session.scalars(select(Key).order_by(Key.purpose, Key.version))
    return [Listed(key=k, data_keys=counts.get(k.id, 0) if k.purpose is KeyPurpose.KEK
                   else None) for k in rows]
