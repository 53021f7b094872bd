"""Recorder logic: cameras, sealing chunks, committing them into the chain, checkpoints.

Keyword-only, typed, takes the session, only flushes; the caller commits.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from recorder.spool import ActiveChunk, PendingChunk, PendingGap
from vigil import audit, chain, chunks, crypto, keys
from vigil.auth import scope
from vigil.catalog.models import (
    MAX_CHUNK_WALL_S,
    Camera,
    ChainHead,
    Checkpoint,
    Chunk,
    ClockSource,
    DataKey,
    GapCause,
    KeyPurpose,
    Principal,
    RecordingGap,
    Region,
)
from vigil.errors import Conflict, Forbidden, IntegrityError, InvalidInput, NotFound
from vigil.redact import redact_url

log = logging.getLogger("vigil.recorder")

MIN_CHUNK_S: Final = 2
MAX_CHUNK_S: Final = 300
# Checkpoints: at least this often per camera whose head moved (issue 3: every minute).
CHECKPOINT_INTERVAL: Final = timedelta(seconds=30)
SUPPORTED_SCHEMES: Final = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp",
                            "tcp", "file", "synthetic")


class ChainConflict(IntegrityError):
    """A chunk does not follow its camera's chain head (two writers, or a lost chunk)."""

    code = "chain_conflict"


def us_to_dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def dt_to_us(at: datetime) -> int:
    return chunks.to_us(at)


# --- cameras -------------------------------------------------------------------------


def list_cameras(*, session: Session, principal: Principal | None = None) -> Sequence[Camera]:
    """Every camera, or those in ``principal``'s scope."""
    stmt = select(Camera).order_by(Camera.name)
    if principal is not None:
        stmt = stmt.where(scope.scope_of(session, principal).camera_clause())
    return session.scalars(stmt).all()


def get_camera(*, session: Session, name: str, principal: Principal | None = None) -> Camera:
    """The camera called ``name``; with ``principal``, only if it lies in its scope
    (``scope.OutOfScope``, answered as absent, otherwise)."""
    camera = session.scalars(select(Camera).where(Camera.name == name)).one_or_none()
    if camera is None:
        raise NotFound(f"camera {name!r} does not exist")
    if principal is not None:
        scope.check_camera(session, principal, camera)
    return camera


def add_camera(*, session: Session, name: str, url: str, actor: str,
               region_code: str | None = None, chunk_seconds: int = 60,
               principal: Principal | None = None) -> Camera:
    """Register a camera (audited). With ``principal``, its region must lie in the
    principal's region subtree; a principal bound to a camera set registers none."""
    name = name.strip()
    if not name:
        raise InvalidInput("a camera needs a name")
    if not MIN_CHUNK_S <= chunk_seconds <= MAX_CHUNK_S:
        raise InvalidInput(f"chunk length must be {MIN_CHUNK_S} to {MAX_CHUNK_S} s, "
                           f"not {chunk_seconds}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SUPPORTED_SCHEMES and not url.startswith("/"):
        raise InvalidInput(f"unsupported source {redact_url(url)!r}; use one of "
                           f"{', '.join(SUPPORTED_SCHEMES)} or a file path")
    reach = None if principal is None else scope.scope_of(session, principal)
    if reach is not None and reach.camera_ids is not None:
        raise Forbidden("a principal bound to a camera set cannot register cameras")
    if session.scalars(select(Camera.id).where(Camera.name == name)).first() is not None:
        raise Conflict(f"camera {name!r} already exists")
    region_id = None
    if region_code is not None:
        region = session.scalars(select(Region).where(Region.code == region_code)).first()
        if region is None:
            raise NotFound(f"region {region_code!r} does not exist")
        if principal is not None:
            scope.check_region(session, principal, region, region_code)
        region_id = region.id
    elif reach is not None and reach.region_path is not None:
        raise InvalidInput("name the camera's region: it must lie within your region")
    camera = Camera(name=name, source_url=url, region_id=region_id,
                    chunk_target_s=chunk_seconds)
    session.add(camera)
    session.flush()
    audit.record(session=session, actor=actor, action="camera.add", target_type="camera",
                 target_id=str(camera.id),
                 detail={"name": name, "url": redact_url(url), "chunk_seconds": chunk_seconds,
                         "region": region_code})
    return camera


def set_sensitive(*, session: Session, name: str, sensitive: bool, actor: str,
                  principal: Principal | None = None) -> Camera:
    """Mark a camera sensitive (its exports may need approval, retrieval/approval.py) or
    not; audited."""
    camera = get_camera(session=session, name=name, principal=principal)
    before = camera.sensitive
    if before and not sensitive and principal is not None and not scope.above(
            session, principal, camera):
        # Otherwise the region's own admin could lift the approval its exports need.
        raise Forbidden(f"camera {camera.name!r} is sensitive; only a principal above its "
                        "region may clear that")
    camera.sensitive = sensitive
    session.flush()
    audit.record(session=session, actor=actor,
                 principal_id=None if principal is None else principal.id,
                 action="camera.update", target_type="camera", target_id=str(camera.id),
                 detail={"name": camera.name, "sensitive": sensitive, "before": before})
    return camera


# --- the chain -----------------------------------------------------------------------


@dataclass(frozen=True)
class Tip:
    """Where a camera's chain stands: the last sequence number and chain hash."""

    seq: int  # -1 before the first chunk
    chain_hash: bytes


def committed_tip(*, session: Session, camera_id: int) -> Tip:
    head = session.get(ChainHead, camera_id)
    return Tip(-1, chain.GENESIS) if head is None else Tip(head.seq, head.chain_hash)


def object_key_for(*, camera_id: int, seq: int, start_us: int) -> str:
    day = us_to_dt(start_us)
    return (f"chunks/{camera_id}/{day:%Y/%m/%d}/{seq:020d}-"
            f"{secrets.token_hex(8)}.vch")


class Sealer:
    """What sealing needs: the key provider and the active KEK, which ``refresh``
    follows (the fleet loop calls it on every tick), so that a recorder running
    through a KEK rotation wraps new data keys under the new KEK within a tick instead
    of until it restarts (docs/design/keys.md). Shared by the camera threads: the KEK
    is read as one (id, reference) pair."""

    def __init__(self, *, provider: keys.KeyProvider, kek_id: int, kek_ref: str) -> None:
        self.provider = provider
        self._kek = (kek_id, kek_ref)

    @property
    def kek(self) -> tuple[int, str]:
        return self._kek

    def refresh(self, *, session: Session) -> None:
        kek = keys.active_key(session=session, provider=self.provider,
                              purpose=KeyPurpose.KEK)
        if (kek.id, kek.provider_ref) != self._kek:
            log.info("sealing under KEK version %d from now on", kek.version)
            self._kek = (kek.id, kek.provider_ref)


def make_sealer(*, session: Session, provider: keys.KeyProvider) -> Sealer:
    kek = keys.active_key(session=session, provider=provider, purpose=KeyPurpose.KEK)
    return Sealer(provider=provider, kek_id=kek.id, kek_ref=kek.provider_ref)


def seal_chunk(*, sealer: Sealer, plaintext_path: Path, sealed_path: Path,
               active: ActiveChunk, start_us: int, end_us: int, media_duration_us: int,
               codec: dict[str, Any]) -> PendingChunk:
    """Encrypt a finished chunk file into ``sealed_path`` (fsync'ed) and compute its
    chain hash; streams in blocks, so memory does not grow with the chunk.

    Refuses what the catalog would refuse, before it is chained: an entry refused
    at commit would break the chain of every chunk sealed after it."""
    plaintext_bytes = plaintext_path.stat().st_size
    if plaintext_bytes == 0 or media_duration_us <= 0 or end_us <= start_us:
        raise InvalidInput(f"chunk camera {active.camera_id} seq {active.seq} is empty")
    if end_us - start_us > MAX_CHUNK_WALL_S * 1_000_000:
        raise InvalidInput(f"chunk camera {active.camera_id} seq {active.seq} spans "
                           f"{(end_us - start_us) / 1e6:.1f} s, over {MAX_CHUNK_WALL_S} s")
    with open(plaintext_path, "rb") as src:
        plaintext_sha256 = crypto.sha256_of(src)
        src.seek(0)
        fd = os.open(sealed_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as dst:
            sealed = crypto.seal_stream(src, dst, camera_id=active.camera_id, seq=active.seq,
                                        start_us=start_us, plaintext_sha256=plaintext_sha256)
            dst.flush()
            os.fsync(dst.fileno())
    link = chain.Link(camera_id=active.camera_id, seq=active.seq, start_us=start_us,
                      end_us=end_us, media_duration_us=media_duration_us,
                      plaintext_bytes=plaintext_bytes, sha256=plaintext_sha256,
                      clock_source=active.clock_source)
    kek_id, kek_ref = sealer.kek
    return PendingChunk(
        camera_id=active.camera_id, seq=active.seq, start_us=start_us, end_us=end_us,
        media_duration_us=media_duration_us, clock_source=active.clock_source,
        plaintext_bytes=plaintext_bytes, stored_bytes=sealed.stored_bytes,
        sha256=plaintext_sha256.hex(), prev_chain_hash=active.prev_chain_hash,
        chain_hash=chain.chain_hash(bytes.fromhex(active.prev_chain_hash), link).hex(),
        object_key=object_key_for(camera_id=active.camera_id, seq=active.seq,
                                  start_us=start_us),
        kek_id=kek_id,
        wrapped_key=sealer.provider.wrap(kek_ref, sealed.data_key).hex(),
        stored_sha256=sealed.stored_sha256.hex(),
        codec=codec)


def commit_chunk(*, session: Session, pending: PendingChunk) -> bool:
    """Insert the data key and chunk rows and advance the chain head.

    Idempotent: returns False when the chunk is already committed (a crash between
    commit and spool removal). Raises ChainConflict when the chunk does not follow
    the head. Call only after the object was stored and verified (invariant I1).
    """
    if session.scalars(select(Chunk.id).where(
            Chunk.object_key == pending.object_key)).first() is not None:
        return False
    head = session.get(ChainHead, pending.camera_id, with_for_update=True)
    tip = Tip(-1, chain.GENESIS) if head is None else Tip(head.seq, head.chain_hash)
    if pending.seq != tip.seq + 1 or bytes.fromhex(pending.prev_chain_hash) != tip.chain_hash:
        raise ChainConflict(
            f"chunk camera {pending.camera_id} seq {pending.seq} does not follow the chain "
            f"head at seq {tip.seq}; another recorder may be writing this camera")
    data_key = DataKey(kek_id=pending.kek_id, wrapped=bytes.fromhex(pending.wrapped_key))
    session.add(data_key)
    session.flush()
    session.add(Chunk(
        camera_id=pending.camera_id, seq=pending.seq, start_at=us_to_dt(pending.start_us),
        end_at=us_to_dt(pending.end_us), media_duration_us=pending.media_duration_us,
        clock_source=ClockSource(pending.clock_source),
        plaintext_bytes=pending.plaintext_bytes, stored_bytes=pending.stored_bytes,
        object_key=pending.object_key, sha256=bytes.fromhex(pending.sha256),
        chain_hash=bytes.fromhex(pending.chain_hash), data_key_id=data_key.id,
        codec=pending.codec))
    if head is None:
        session.add(ChainHead(camera_id=pending.camera_id, seq=pending.seq,
                              chain_hash=bytes.fromhex(pending.chain_hash)))
    else:
        head.seq, head.chain_hash = pending.seq, bytes.fromhex(pending.chain_hash)
        head.updated_at = datetime.now(UTC)
    session.flush()
    return True


def commit_gap(*, session: Session, gap: PendingGap) -> bool:
    start, end = us_to_dt(gap.start_us), us_to_dt(gap.end_us)
    exists = session.scalars(select(RecordingGap.id).where(
        RecordingGap.camera_id == gap.camera_id, RecordingGap.start_at == start)).first()
    if exists is not None:
        return False
    session.add(RecordingGap(camera_id=gap.camera_id, start_at=start, end_at=end,
                             cause=GapCause(gap.cause), detail=gap.detail))
    session.flush()
    return True


def sign_checkpoints(*, session: Session, provider: keys.KeyProvider,
                     now: datetime | None = None, camera_ids: Collection[int] | None = None,
                     at_once: bool = False) -> int:
    """Sign the chain head of every camera (of ``camera_ids``, if given) whose head
    moved since its last checkpoint and whose last checkpoint is older than
    CHECKPOINT_INTERVAL (any age with ``at_once``: an export that needs its chunks
    covered now). Returns the count."""
    now = now or datetime.now(UTC)
    key = keys.active_key(session=session, provider=provider,
                          purpose=KeyPurpose.CHECKPOINT_SIGNING)
    signer = provider.signing_key(key.provider_ref)
    signed = 0
    heads = select(ChainHead)
    if camera_ids is not None:
        heads = heads.where(ChainHead.camera_id.in_(list(camera_ids)))
    for head in session.scalars(heads).all():
        last = session.scalars(select(Checkpoint).where(Checkpoint.camera_id == head.camera_id)
                               .order_by(Checkpoint.seq.desc()).limit(1)).first()
        if last is not None and (last.seq == head.seq or (
                not at_once and now - last.signed_at < CHECKPOINT_INTERVAL)):
            continue
        assert key.fingerprint is not None
        checkpoint = chain.Checkpoint(camera_id=head.camera_id, seq=head.seq,
                                      chain_hash=head.chain_hash, signed_at_us=dt_to_us(now),
                                      key_fingerprint=key.fingerprint)
        session.add(Checkpoint(camera_id=head.camera_id, seq=head.seq,
                               chain_hash=head.chain_hash, signed_at=now, key_id=key.id,
                               signature=chain.sign_checkpoint(signer, checkpoint)))
        signed += 1
    session.flush()
    return signed
