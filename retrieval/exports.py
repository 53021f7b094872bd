"""Exports: from a request to a signed evidence package in the object store.

A request (``request_export``) is checked and recorded in one transaction, with its
custody event; a Celery task (``retrieval.tasks``) then builds the package
(``run_export``):

1. claim the export's lease (a task delivered twice runs once; a dead worker's
   export is taken over once its lease expires);
2. plan each camera range: the chunks overlapping it, the chain hash before the
   first, a signed checkpoint covering the last (signed now if none does yet), the
   chain links up to it, and the gaps with their recorded causes;
3. fetch every chunk: decrypt (AES-GCM bound to its slot), check its plaintext hash
   and its chain link against the catalog, and the chain up to the checkpoint's
   signature. Any mismatch fails the export with the named error, an audit event
   and a custody event: no package is ever built from footage that does not verify;
4. stitch each range into one clip (``retrieval.clip``), and make the watermarked
   copy if a recipient is named (``retrieval.watermark``);
5. record the ``export_packaged`` custody event, build the bag (``retrieval.package``)
   with the case's custody record up to that event, and check it with the offline
   verifier before it leaves;
6. seal the zip under a fresh data key and store it; mark the export succeeded.

Transient failures (object store, database or timestamp authority unreachable) give
the lease up with a hold and raise; ``vigil.export.resume`` sends the export again
after it. Everything else ends the export as failed with its reason, and so do the
task's soft time limit and ``MAX_ATTEMPTS`` attempts that never completed.
Progress (stage and percent) is written to the export's row as it goes.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from recorder.service import get_camera, sign_checkpoints
from retention import service as retention_service
from retrieval import approval, cases
from retrieval.timeline import timeline
from vigil import audit, chain, crypto, keys
from vigil.auth.scope import OutOfScope
from vigil.catalog.models import (
    Camera,
    Case,
    Checkpoint,
    Chunk,
    Export,
    ExportItem,
    ExportStatus,
    Key,
    KeyPurpose,
    Principal,
    Region,
    RoleName,
)
from vigil.catalog.queries import chain_hash_before, chunks_overlapping, overlapping_stmt
from vigil.chunks import link_of, read_plaintext, to_us
from vigil.db import get_engine, session_scope
from vigil.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageError,
    VigilError,
)
from vigil.intervals import Span
from vigil.objectstore import get_object_store
from vigil.settings import Settings

log = logging.getLogger("vigil.exports")

MAX_ITEMS: Final = 16
MAX_ITEM_SPAN: Final = timedelta(hours=24)
# Footage per export, so that it completes within the task's soft time limit (55 min):
# an hour exports in ~76 s; a watermarked copy encodes at ~2x real time (bench/).
MAX_TOTAL: Final = timedelta(hours=24)
MAX_TOTAL_WATERMARKED: Final = timedelta(minutes=90)
# An export still unfinished after this many attempts is failed, not retried forever.
MAX_ATTEMPTS: Final = 8
MAX_TEXT_CHARS: Final = 500
LEASE_TTL: Final = timedelta(seconds=30)
LEASE_RENEW_S: Final = 10.0
# After a transient failure, the next attempt waits this long.
RETRY_HOLD: Final = timedelta(seconds=60)
PROGRESS_EVERY_S: Final = 0.5
PACKAGE_PREFIX: Final = "exports/"
# Share of the progress bar each stage fills.
_STAGES: Final = {"planning": (0, 2), "fetching": (2, 45), "stitching": (45, 60),
                  "watermarking": (60, 85), "packaging": (85, 95), "storing": (95, 100)}


# --- requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemRequest:
    camera: str
    start_at: datetime
    end_at: datetime


def request_export(*, session: Session, reference: str, items: Sequence[ItemRequest],
                   purpose: str, recipient: str | None, principal: Principal) -> Export:
    """Record an export request (flushes; the caller commits, then ``enqueue``s)."""
    case = cases.acting_case(session=session, reference=reference, principal=principal)
    purpose, recipient = purpose.strip(), (recipient or "").strip() or None
    if not purpose or len(purpose) > MAX_TEXT_CHARS or not purpose.isprintable():
        raise InvalidInput(f"an export needs a purpose of 1 to {MAX_TEXT_CHARS} printable "
                           "characters")
    if recipient is not None and (len(recipient) > MAX_TEXT_CHARS
                                  or not recipient.isprintable()):
        raise InvalidInput(f"a recipient is 1 to {MAX_TEXT_CHARS} printable characters")
    if not 1 <= len(items) <= MAX_ITEMS:
        raise InvalidInput(f"an export holds 1 to {MAX_ITEMS} camera ranges")
    now = datetime.now(UTC)
    rows: list[tuple[Camera, ItemRequest]] = []
    for item in items:
        if item.start_at.tzinfo is None or item.end_at.tzinfo is None:
            raise InvalidInput("export times need a UTC offset")
        if not item.start_at < item.end_at:
            raise InvalidInput(f"camera {item.camera!r}: the range must end after it starts")
        if item.end_at - item.start_at > MAX_ITEM_SPAN:
            raise InvalidInput(f"camera {item.camera!r}: a range is at most "
                               f"{MAX_ITEM_SPAN.total_seconds() / 3600:g} h")
        if item.end_at > now:
            raise InvalidInput(f"camera {item.camera!r}: the range ends in the future")
        camera = get_camera(session=session, name=item.camera, principal=principal)
        if any(c.id == camera.id for c, _ in rows):
            raise InvalidInput(f"camera {item.camera!r} appears twice: one range per camera "
                               "(export other ranges separately)")
        # Existence only: one row, not the range's (up to 1,440 at 24 h).
        if session.scalars(overlapping_stmt(camera_id=camera.id, window=Span(
                item.start_at, item.end_at)).limit(1)).first() is None:
            raise InvalidInput(f"camera {item.camera!r} has no recording in "
                               f"[{item.start_at.isoformat()}, {item.end_at.isoformat()})")
        rows.append((camera, item))
    total = sum((i.end_at - i.start_at for _, i in rows), timedelta(0))
    limit = MAX_TOTAL_WATERMARKED if recipient else MAX_TOTAL
    if total > limit:
        raise InvalidInput(f"an export{' with a watermarked copy' if recipient else ''} holds "
                           f"at most {limit.total_seconds() / 3600:g} h of footage in all, so "
                           "that it completes within the task's time limit; split it")
    export = Export(case_id=case.id, requested_by=principal.id, purpose=purpose,
                    recipient=recipient)
    session.add(export)
    session.flush()
    for camera, item in rows:
        session.add(ExportItem(export_id=export.id, camera_id=camera.id,
                               start_at=item.start_at, end_at=item.end_at))
    needs_approval = approval.decide_at_request(
        session=session, export=export, items=[(c, i.end_at - i.start_at) for c, i in rows])
    # The exported footage outlives its retention rule while the case is open. Camera
    # locks are taken in id order, so that two exports cannot wait on each other.
    for camera, item in sorted(rows, key=lambda row: row[0].id):
        retention_service.place_hold(session=session, case=case, camera=camera,
                                     start_at=item.start_at, end_at=item.end_at,
                                     reason=f"export {export.id}", principal=principal,
                                     export_id=export.id)
    detail = {"purpose": purpose, "recipient": recipient,
              "items": [{"camera": c.name, "from_us": to_us(i.start_at),
                         "to_us": to_us(i.end_at)} for c, i in rows],
              "approval": export.approval.value, "approval_needed_because": needs_approval}
    cases.append_custody(session=session, case=case, action="export_requested",
                         principal=principal, export_id=export.id, detail=detail)
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action="export.request", target_type="export", target_id=str(export.id),
                 detail={"case": case.reference, **detail})
    session.flush()
    return export


def get_export(*, session: Session, export_id: str | uuid.UUID,
               principal: Principal) -> tuple[Export, Case]:
    """The export and its case, if ``principal`` may see the case."""
    try:
        key = export_id if isinstance(export_id, uuid.UUID) else uuid.UUID(str(export_id))
    except ValueError:
        raise NotFound(f"export {export_id!r} does not exist") from None
    export = session.get(Export, key)
    if export is None:
        raise NotFound(f"export {export_id} does not exist")
    case = session.get(Case, export.case_id)
    assert case is not None  # FK
    if not (cases.may_see(session=session, case=case, principal=principal)
            and approval.covers_export(session=session, principal=principal, export=export)):
        raise OutOfScope(f"export {export_id} does not exist", principal=principal,
                         target_type="export", target_id=str(export.id))
    return export, case


def enqueue(export_id: uuid.UUID) -> None:
    """Hand the export to a worker; call after the request's transaction committed.

    If the broker cannot be reached, the export stays queued in the catalog and
    ``vigil.export.resume`` sends it once the broker is back: nothing is lost."""
    from kombu.exceptions import OperationalError

    from retrieval.tasks import build_export
    from vigil.tasks import configure

    configure()
    try:
        build_export.apply_async((str(export_id),), retry=False)
    except OperationalError as exc:
        log.warning("export %s: the broker is unreachable (%s); it stays queued and is "
                    "sent again when the broker is back", export_id, type(exc).__name__)


# --- the lease -----------------------------------------------------------------------


class ChunkMissing(IntegrityError):
    """A chunk the catalog names has no object in the store."""

    code = "chunk_missing"


class LeaseLost(Conflict):
    """Another worker took the export over (this one was too slow to renew)."""

    code = "export_lease_lost"


def claim(engine: Engine, export_id: uuid.UUID, owner: str) -> bool:
    with engine.begin() as conn:
        row = conn.execute(text("""
            UPDATE exports
               SET lease_owner = :owner, lease_expires_at = now() + :ttl,
                   status = 'running', started_at = coalesce(started_at, now()),
                   attempts = attempts + 1
             WHERE id = :id AND status IN ('queued', 'running') AND attempts < :max
               AND (lease_expires_at IS NULL OR lease_expires_at < now()
                    OR lease_owner = :owner)
            RETURNING id"""), {"id": export_id, "owner": owner, "ttl": LEASE_TTL,
                               "max": MAX_ATTEMPTS}).first()
    return row is not None


def stalled_exports(engine: Engine, *, older_than: timedelta = timedelta(0)) -> list[uuid.UUID]:
    """Exports to hand to a worker again: running with an expired lease (their worker
    died, or it gave the export up after a transient failure), or queued for longer
    than ``older_than`` (their message was lost)."""
    with engine.connect() as conn:
        return list(conn.execute(text("""
            SELECT id FROM exports
             WHERE (status = 'running' AND lease_expires_at < now())
                OR (status = 'queued' AND created_at < now() - :age)"""),
            {"age": older_than}).scalars())


class _Heartbeat:
    """Renews the lease in the background and writes progress, throttled."""

    def __init__(self, engine: Engine, export_id: uuid.UUID, owner: str) -> None:
        self.engine, self.export_id, self.owner = engine, export_id, owner
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._last_write = 0.0
        self._thread = threading.Thread(target=self._run, name=f"lease-{export_id}",
                                        daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(LEASE_RENEW_S):
            try:
                with self.engine.begin() as conn:
                    renewed = conn.execute(text("""
                        UPDATE exports SET lease_expires_at = now() + :ttl
                         WHERE id = :id AND lease_owner = :owner"""),
                        {"id": self.export_id, "owner": self.owner, "ttl": LEASE_TTL}).rowcount
            except Exception as exc:  # noqa: BLE001 - the database may be away a while
                log.warning("export %s: renewing the lease failed: %s", self.export_id,
                            type(exc).__name__)
                continue
            if not renewed:
                self.lost.set()
                return

    def progress(self, stage: str, fraction: float = 0.0, *, force: bool = False) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"export {self.export_id}: another worker took it over")
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_EVERY_S:
            return
        self._last_write = now
        low, high = _STAGES[stage]
        pct = int(low + (high - low) * min(max(fraction, 0.0), 1.0))
        with self.engine.begin() as conn:
            conn.execute(update(Export).where(Export.id == self.export_id,
                                              Export.lease_owner == self.owner)
                         .values(stage=stage, progress_pct=pct))


# --- planning ------------------------------------------------------------------------


@dataclass
class _Item:
    camera: Camera
    region: str | None
    span: Span
    chunks: list[Chunk]
    chain_prev: bytes
    tail: list[Chunk]
    checkpoint: Checkpoint
    gaps: list[dict[str, Any]]
    files: dict[int, Path] = field(default_factory=dict)  # seq -> plaintext file
    clip: Any = None  # retrieval.clip.ClipResult
    watermark: dict[str, Any] | None = None

    @property
    def directory(self) -> str:
        return f"camera-{self.camera.id}"

    def original_name(self, seq: int) -> str:
        return f"{self.directory}/originals/{seq:010d}.mov"


def _plan_item(session: Session, provider: keys.KeyProvider, item: ExportItem) -> _Item:
    camera = session.get(Camera, item.camera_id)
    assert camera is not None  # FK
    span = Span(item.start_at, item.end_at)
    chunks = list(chunks_overlapping(session, camera_id=camera.id, window=span))
    if not chunks:
        raise NotFound(f"camera {camera.name!r} has no recording left in the range")
    seqs = [c.seq for c in chunks]
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise IntegrityError(f"camera {camera.name!r}: chunks {seqs[0]}..{seqs[-1]} are not "
                             "consecutive in the catalog")
    chain_prev = chain_hash_before(session, camera_id=camera.id, seq=seqs[0])
    if chain_prev is None:
        raise IntegrityError(f"camera {camera.name!r}: chunk {seqs[0] - 1}, the one before "
                             "the range, is missing from the catalog and no retention "
                             "record accounts for it")
    checkpoint = _covering_checkpoint(session, camera.id, seqs[-1])
    if checkpoint is None:
        sign_checkpoints(session=session, provider=provider, camera_ids=[camera.id],
                         at_once=True)
        checkpoint = _covering_checkpoint(session, camera.id, seqs[-1])
    if checkpoint is None:
        raise IntegrityError(f"camera {camera.name!r}: no signed checkpoint covers chunk "
                             f"{seqs[-1]} and none could be signed")
    tail = list(session.scalars(select(Chunk).where(
        Chunk.camera_id == camera.id, Chunk.seq > seqs[-1], Chunk.seq <= checkpoint.seq)
        .order_by(Chunk.seq)))
    region = None
    if camera.region_id is not None:
        r = session.get(Region, camera.region_id)
        region = None if r is None else r.path
    return _Item(camera=camera, region=region, span=span, chunks=chunks,
                 chain_prev=chain_prev, tail=tail, checkpoint=checkpoint,
                 gaps=_gaps(session, camera.id, span))


def _covering_checkpoint(session: Session, camera_id: int, seq: int) -> Checkpoint | None:
    return session.scalars(select(Checkpoint).where(
        Checkpoint.camera_id == camera_id, Checkpoint.seq >= seq)
        .order_by(Checkpoint.seq, Checkpoint.id).limit(1)).first()


def _gaps(session: Session, camera_id: int, span: Span) -> list[dict[str, Any]]:
    """Every stretch of ``span`` no chunk covers, with the recorded cause if any."""
    return [{"start_us": to_us(g.span.start), "end_us": to_us(g.span.end), "cause": g.cause,
             "detail": g.detail}
            for g in timeline(session, camera_id=camera_id, window=span).gaps]


# --- building ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    settings: Settings
    export_id: uuid.UUID
    owner: str | None  # None: acting on an export nobody holds (giving it up)
    workdir: Path


class ExportAbandoned(VigilError):
    """The export could not complete: too many attempts, or the task's time limit."""

    code = "export_abandoned"


def run_export(*, settings: Settings, export_id: uuid.UUID, owner: str) -> str:
    """Build the package of ``export_id``. Returns ``succeeded``, ``failed``, ``busy``
    (another worker holds the lease) or ``done`` (nothing left to do). Raises for
    transient failures, so that the caller retries."""
    engine = get_engine()
    if not claim(engine, export_id, owner):
        with session_scope() as session:
            export = session.get(Export, export_id)
            if export is None:
                raise NotFound(f"export {export_id} does not exist")
            status, attempts = export.status, export.attempts
            expired = export.lease_expires_at is None or \
                export.lease_expires_at < datetime.now(UTC)
        if status in (ExportStatus.QUEUED, ExportStatus.RUNNING) and \
                attempts >= MAX_ATTEMPTS and expired:
            _fail(_Context(settings=settings, export_id=export_id, owner=None, workdir=Path()),
                  ExportAbandoned(f"no attempt completed in {attempts}; see the workers' logs"))
            return "failed"
        return "busy" if status == ExportStatus.RUNNING else "done"
    # Plaintext left by an attempt whose worker was killed: this lease owns it now.
    exports_dir = settings.home_dir / "work" / "exports"
    for stale in exports_dir.glob(f"{export_id}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    workdir = exports_dir / f"{export_id}-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    ctx = _Context(settings=settings, export_id=export_id, owner=owner, workdir=workdir)
    try:
        with _Heartbeat(engine, export_id, owner) as beat:
            try:
                _build(ctx, beat)
            except LeaseLost:
                log.warning("export %s: lease lost; another worker goes on", export_id)
                return "busy"
            except StorageError:
                _release(engine, export_id, owner)  # an outage: tried again later
                raise
            except VigilError as exc:  # integrity, bad input, missing footage or tools:
                _fail(ctx, exc)  # trying again would fail the same way
                return "failed"
            except SoftTimeLimitExceeded:
                _fail(ctx, ExportAbandoned("the export did not complete within the task's "
                                           "time limit; export shorter ranges"))
                return "failed"
            except BaseException:
                _release(engine, export_id, owner)
                raise
        return "succeeded"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _release(engine: Engine, export_id: uuid.UUID, owner: str) -> None:
    """Give the export up after a transient failure: another attempt may start once
    RETRY_HOLD has passed (``vigil.export.resume`` sends it), not at once, so that an
    outage is not hammered."""
    try:
        with engine.begin() as conn:
            conn.execute(text("""
                UPDATE exports SET lease_owner = NULL, lease_expires_at = now() + :hold
                 WHERE id = :id AND lease_owner = :owner"""),
                {"id": export_id, "owner": owner, "hold": RETRY_HOLD})
    except Exception as exc:  # noqa: BLE001 - the lease then simply expires
        log.warning("export %s: releasing the lease failed: %s", export_id,
                    type(exc).__name__)


def _fail(ctx: _Context, exc: VigilError) -> None:
    code = getattr(exc, "code", type(exc).__name__)
    message = f"{code}: {exc}"
    log.error("export %s failed: %s", ctx.export_id, message)
    with session_scope() as session:
        export = session.get(Export, ctx.export_id, with_for_update=True)
        assert export is not None
        if ctx.owner is not None and export.lease_owner != ctx.owner:
            return
        if export.status not in (ExportStatus.QUEUED, ExportStatus.RUNNING):
            return
        export.status, export.error = ExportStatus.FAILED, message
        export.finished_at = datetime.now(UTC)
        export.lease_owner = export.lease_expires_at = None
        case = session.get(Case, export.case_id)
        assert case is not None
        detail = {"error": code, "message": str(exc)}
        cases.append_custody(session=session, case=case, action="export_failed",
                             principal=None, export_id=export.id, detail=detail)
        action = "export.integrity_failure" if isinstance(exc, IntegrityError) else \
            "export.failed"
        audit.record(session=session, actor="system", action=action, target_type="export",
                     target_id=str(export.id), detail={"case": case.reference, **detail})


def _build(ctx: _Context, beat: _Heartbeat) -> None:
    from retrieval import clip as clips
    from retrieval import package, timestamp, verify, watermark

    settings = ctx.settings
    provider = keys.file_key_ring(settings.home_dir)
    store = get_object_store(settings)
    beat.progress("planning", force=True)
    with session_scope() as session:
        export = session.get(Export, ctx.export_id)
        assert export is not None
        case = session.get(Case, export.case_id)
        requester = session.get(Principal, export.requested_by)
        assert case is not None and requester is not None
        session.expunge(case)
        export_info = {"purpose": export.purpose, "recipient": export.recipient,
                       "requested_by": requester.name,
                       "requested_at": export.created_at.astimezone(UTC).isoformat()}
        items = [_plan_item(session, provider, item) for item in session.scalars(
            select(ExportItem).where(ExportItem.export_id == ctx.export_id)
            .order_by(ExportItem.id))]
        session.expunge_all()

    # Fetch and check every chunk, and each chain up to its signed checkpoint.
    total = sum(c.plaintext_bytes for item in items for c in item.chunks) or 1
    done = 0
    for item in items:
        _check_chain(item)
        folder = ctx.workdir / item.directory / "originals"
        folder.mkdir(parents=True)
        for chunk in item.chunks:
            with session_scope() as session:
                try:
                    plaintext = read_plaintext(session=session, provider=provider,
                                               store=store, chunk=chunk)
                except IntegrityError as exc:
                    raise type(exc)(f"camera {item.camera.name!r} chunk {chunk.seq} "
                                    f"({chunk.object_key}): {exc}") from exc
                except NotFound as exc:
                    raise ChunkMissing(f"camera {item.camera.name!r} chunk {chunk.seq}: "
                                       f"{exc}") from exc
            path = folder / f"{chunk.seq:010d}.mov"
            path.write_bytes(plaintext)
            item.files[chunk.seq] = path
            done += len(plaintext)
            beat.progress("fetching", done / total)

    # Stitch, then watermark.
    for n, item in enumerate(items):
        beat.progress("stitching", n / len(items), force=True)
        sources = [clips.ClipSource(path=item.files[c.seq], seq=c.seq,
                                    start_us=to_us(c.start_at), end_us=to_us(c.end_at))
                   for c in item.chunks]
        item.clip = clips.stitch(
            sources, from_us=to_us(item.span.start), to_us=to_us(item.span.end),
            out=ctx.workdir / item.directory / "clip.mp4", title=item.camera.name,
            gaps=[clips.ClipGap(g["start_us"], g["end_us"], g["cause"]) for g in item.gaps])
    exported_at = datetime.now(UTC).replace(microsecond=0)
    if export_info["recipient"]:
        for n, item in enumerate(items):
            def step(fraction: float, n: int = n) -> None:
                beat.progress("watermarking", (n + fraction) / len(items))

            overlay = watermark.Overlay(
                case=case.reference, export_id=str(ctx.export_id),
                recipient=export_info["recipient"], exported_at=exported_at,
                camera=item.camera.name, clip_start_us=to_us(item.span.start))
            item.watermark = watermark.watermark(
                ctx.workdir / item.directory / "clip.mp4",
                ctx.workdir / item.directory / "clip-watermarked.mp4", overlay,
                on_progress=step)

    # The evidence, the custody event that seals it, the bag.
    beat.progress("packaging", force=True)
    with session_scope() as session:
        key_rows = {k.fingerprint: k for k in session.scalars(
            select(Key).where(Key.purpose == KeyPurpose.CHECKPOINT_SIGNING))}
        evidence = _evidence(ctx, case, export_info, items, key_rows, exported_at)
        evidence_bytes = package.evidence_bytes(evidence)
        payload = _payload(items)
        row = cases.append_custody(
            session=session, case=session.get(Case, case.id), action="export_packaged",
            principal=None, export_id=ctx.export_id,
            detail={"evidence_sha256": hashlib.sha256(evidence_bytes).hexdigest(),
                    "payload_files": len(payload),
                    "payload_bytes": sum(p.path.stat().st_size for p in payload)})
        custody_lines = [event.line(h) for event, h in cases.custody_log(
            session=session, case=session.get(Case, case.id), through_seq=row.seq)]
        signing = keys.active_key(session=session, provider=provider,
                                  purpose=KeyPurpose.PACKAGE_SIGNING)
        signer = provider.signing_key(signing.provider_ref)
    zip_path = ctx.workdir / "package.zip"

    # Everything an auditor checks but the re-stitch: the clip was stitched from these
    # very originals a moment ago, and stitching them again would double the export's
    # media work (bench/export.py); the tests re-stitch every package they build.
    def self_check(path: Path) -> None:
        report = verify.verify_package(
            path, restitch=False,
            on_progress=lambda f: beat.progress("packaging", 0.5 + f / 2))
        if not report.ok:
            raise IntegrityError("the package failed its own verification: "
                                 + "; ".join(f"{f.check} {f.file}: {f.message}"
                                             for f in report.failures[:5]))

    built = package.build_package(
        out=zip_path, export_id=str(ctx.export_id), evidence=evidence,
        bag_info={"Source-Organization": settings.organization,
                  "External-Description": f"Vigil evidence export for case {case.reference}",
                  "Bag-Software-Agent": f"vigil {_version('vigil')}",
                  "Vigil-Case": case.reference},
        custody_lines=custody_lines, files=payload, signing_key=signer,
        packaged_at=exported_at,
        timestamp_token=partial(timestamp.request_token, url=settings.tsa_url,
                                timeout_s=settings.tsa_timeout_s) if settings.tsa_url else None,
        on_progress=lambda f: beat.progress("packaging", f * 0.5), check=self_check)

    # Seal while storing: the sealed package is never written locally.
    beat.progress("storing", force=True)
    zip_sha = bytes.fromhex(built.sha256)
    # A key per attempt: a worker whose lease was taken over can never overwrite the
    # package another worker stored and committed.
    object_key = f"{PACKAGE_PREFIX}{ctx.export_id}/{uuid.uuid4().hex[:12]}.zip.vglc"
    with open(zip_path, "rb") as src:
        sealing = crypto.SealingReader(src, camera_id=0, seq=0, start_us=0,
                                       plaintext_sha256=zip_sha, plaintext_bytes=built.bytes)
        assert sealing.size is not None
        stored = store.put_stream(object_key, sealing, sealing.size)
    assert stored.sha256_hex is not None
    sealed = sealing.sealed(stored_sha256=bytes.fromhex(stored.sha256_hex))
    with session_scope() as session:
        data_key = keys.new_data_key(session=session, provider=provider,
                                     data_key=sealed.data_key)
        export = session.get(Export, ctx.export_id, with_for_update=True)
        assert export is not None
        if export.lease_owner != ctx.owner:
            raise LeaseLost(f"export {ctx.export_id}: another worker took it over")
        export.status, export.stage, export.progress_pct = ExportStatus.SUCCEEDED, "done", 100
        export.package_key, export.package_sha256 = object_key, zip_sha
        export.package_bytes, export.package_data_key_id = built.bytes, data_key.id
        export.finished_at = datetime.now(UTC)
        export.lease_owner = export.lease_expires_at = None
        export.error = None
        audit.record(session=session, actor="system", action="export.succeeded",
                     target_type="export", target_id=str(ctx.export_id),
                     detail={"case": case.reference, "package_sha256": built.sha256,
                             "package_bytes": built.bytes})


def _check_chain(item: _Item) -> None:
    """The catalog's chain from ``chain_prev`` through the range and the tail must
    reach the checkpoint, whose signature must verify."""
    links = [(link_of(c), c.chain_hash) for c in [*item.chunks, *item.tail]]
    head = chain.verify_chain(links, prev=item.chain_prev)
    cp = item.checkpoint
    if head != cp.chain_hash:
        raise chain.ChainBroken(f"camera {item.camera.name!r}: the chain does not reach the "
                                f"signed checkpoint at seq {cp.seq}")
    with session_scope() as session:
        key = session.get(Key, cp.key_id)
        assert key is not None and key.public_key is not None and key.fingerprint
        public = keys.load_public(key.public_key)
        fingerprint = key.fingerprint
    chain.verify_checkpoint(public, chain.Checkpoint(
        camera_id=cp.camera_id, seq=cp.seq, chain_hash=cp.chain_hash,
        signed_at_us=to_us(cp.signed_at), key_fingerprint=fingerprint), cp.signature)


def _link_fields(c: Chunk) -> dict[str, Any]:
    return {"seq": c.seq, "start_us": to_us(c.start_at), "end_us": to_us(c.end_at),
            "media_duration_us": c.media_duration_us, "plaintext_bytes": c.plaintext_bytes,
            "sha256": c.sha256.hex(), "chain_hash": c.chain_hash.hex(),
            "clock_source": c.clock_source.value}


def _evidence(ctx: _Context, case: Case, info: dict[str, Any], items: Sequence[_Item],
              key_rows: dict[str | None, Key], packaged_at: datetime) -> dict[str, Any]:
    import av

    used = {item.checkpoint.key_id for item in items}
    out_items = []
    for item in items:
        cp = item.checkpoint
        fingerprint = next(k.fingerprint for k in key_rows.values() if k.id == cp.key_id)
        out_items.append({
            "camera": {"id": item.camera.id, "name": item.camera.name, "region": item.region},
            "from_us": to_us(item.span.start), "to_us": to_us(item.span.end),
            "from": item.span.start.isoformat(), "to": item.span.end.isoformat(),
            "chunks": [{**_link_fields(c), "file": "data/" + item.original_name(c.seq)}
                       for c in item.chunks],
            "chain_prev": item.chain_prev.hex(),
            "chain_tail": [_link_fields(c) for c in item.tail],
            "checkpoint": {"seq": cp.seq, "chain_hash": cp.chain_hash.hex(),
                           "signed_at_us": to_us(cp.signed_at),
                           "key_fingerprint": fingerprint,
                           "signature": cp.signature.hex()},
            "gaps": item.gaps,
            "clip": {"file": f"data/{item.directory}/clip.mp4",
                     "first_frame_us": item.clip.first_frame_us,
                     "last_frame_us": item.clip.last_frame_us, "frames": item.clip.frames},
            "watermarked": None if item.watermark is None else {
                "file": f"data/{item.directory}/clip-watermarked.mp4",
                "transformation": item.watermark},
        })
    return {
        "format": "vigil-evidence/1",
        "export": {"id": str(ctx.export_id),
                   "case": {"reference": case.reference, "title": case.title},
                   "requested_by": info["requested_by"], "purpose": info["purpose"],
                   "recipient": info["recipient"], "requested_at": info["requested_at"],
                   "packaged_at": packaged_at.isoformat()},
        "items": out_items,
        "keys": {"checkpoint_signing": [
            {"fingerprint": k.fingerprint, "public_key": (k.public_key or b"").hex()}
            for k in sorted(key_rows.values(), key=lambda k: k.version) if k.id in used]},
        "software": {"vigil": _version("vigil"), "python": platform.python_version(),
                     "pyav": av.__version__,
                     "libavformat": str(av.library_versions.get("libavformat"))},
    }


def _payload(items: Sequence[_Item]) -> list[Any]:
    from retrieval.package import PayloadFile

    files = []
    for item in items:
        for c in item.chunks:
            files.append(PayloadFile(name=item.original_name(c.seq), path=item.files[c.seq],
                                     sha256=c.sha256.hex()))
        base = item.files[item.chunks[0].seq].parent.parent
        files.append(PayloadFile(name=f"{item.directory}/clip.mp4", path=base / "clip.mp4"))
        if item.watermark is not None:
            files.append(PayloadFile(name=f"{item.directory}/clip-watermarked.mp4",
                                     path=base / "clip-watermarked.mp4"))
    return files


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


# --- downloads -----------------------------------------------------------------------


def download_package(*, session: Session, settings: Settings, export: Export, case: Case,
                     principal: Principal, dst: Path, via: str, record: bool = True) -> Path:
    """Decrypt the stored package into ``dst`` (checked against its recorded hash) and
    record the download as a custody event (unless ``record`` is false: the rest of a
    download already recorded, asked for by HTTP Range). Commits."""
    if RoleName(principal.role) == RoleName.AUDITOR or (
            RoleName(principal.role) != RoleName.ADMIN
            and not cases.is_member(session=session, case=case, principal=principal)):
        raise NotFound(f"export {export.id} does not exist")
    if export.status != ExportStatus.SUCCEEDED or export.package_key is None:
        raise Conflict(f"export {export.id} is {export.status.value}, not ready to download")
    approval.check_released(export)
    assert export.package_sha256 is not None and export.package_data_key_id is not None
    provider = keys.file_key_ring(settings.home_dir)
    data_key = keys.unwrap_data_key(session=session, provider=provider,
                                    data_key_id=export.package_data_key_id)
    sealed = dst.with_name(dst.name + ".sealed")
    try:
        get_object_store(settings).get_file(export.package_key, sealed)
        try:
            crypto.open_sealed_file(sealed, dst, data_key=data_key, slot=crypto.Slot(
                camera_id=0, seq=0, start_us=0, sha256=export.package_sha256))
        except IntegrityError as exc:
            audit.record(session=session, actor="system", action="export.integrity_failure",
                         target_type="export", target_id=str(export.id),
                         detail={"case": case.reference, "object": export.package_key,
                                 "error": exc.code})
            session.commit()
            raise type(exc)(f"the stored package of export {export.id} does not verify: "
                            f"{exc}") from exc
    finally:
        sealed.unlink(missing_ok=True)
    if not record:
        return dst
    cases.append_custody(session=session, case=case, action="package_downloaded",
                         principal=principal, export_id=export.id,
                         detail={"via": via, "package_sha256": export.package_sha256.hex()})
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action="export.download", target_type="export", target_id=str(export.id),
                 detail={"case": case.reference, "via": via})
    session.commit()
    return dst
