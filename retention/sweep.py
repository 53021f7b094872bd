"""The sweeper: deletes expired chunks by the delete path of docs/design/storage.md.

Per batch of one camera's oldest expired chunks:

D1  one transaction: take the camera's retention lock (which hold placement takes
    too), select the expired chunks again (holds re-checked), insert a tombstone per
    chunk carrying its whole row, delete the chunk rows; commit.
D2  delete every version of their objects (``delete_many``: S3 DeleteObjects). A
    store that refuses (an object lock Vigil did not expect) wins: one transaction
    puts the chunk row back from its tombstone and removes the tombstone; alarmed
    and audited. The others' tombstones are marked ``object_deleted_at``.
D3  destroy their data keys (``wrapped`` NULL, ``destroyed_at``): crypto-shredding,
    final even for copies of the objects outside Vigil's control; tombstones marked
    ``key_destroyed_at``; commit.
D4+D5  one transaction: a retention record per contiguous stretch of ``seq`` (the
    chain's account of what retention removed), an audit event for the batch, and
    the tombstones removed; commit.

Every step is idempotent, and the sweep first finishes the tombstones an earlier,
interrupted sweep left (from the first step not done), so that a crash at any point
is repaired by the next run. A sweep ends with one audit event with its counts and
bytes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine, text

from retention.policy import Removed, stretches
from retention.service import EXPIRED, Governed, governed_cameras, lock_camera
from vigil import audit
from vigil.db import get_engine, session_scope
from vigil.errors import Conflict
from vigil.objectstore import ObjectStore, get_object_store
from vigil.settings import Settings

log = logging.getLogger("vigil.retention")

# Tombstones finished per round when resuming an interrupted sweep.
RESUME_BATCH: Final = 1000
# pg_try_advisory_lock key held by the one running sweep ("VGSW").
SWEEP_LOCK: Final = 0x56_47_53_57


class SweepBusy(Conflict):
    code = "sweep_busy"


@dataclass
class CameraSwept:
    chunks: int = 0
    stored_bytes: int = 0
    start_at: datetime | None = None
    end_at: datetime | None = None


@dataclass
class SweepReport:
    sweep_id: uuid.UUID
    cameras: dict[str, CameraSwept] = field(default_factory=dict)
    resumed: int = 0  # tombstones of an earlier, interrupted sweep finished now
    refused: list[dict[str, Any]] = field(default_factory=list)  # by the object store

    @property
    def chunks(self) -> int:
        return sum(c.chunks for c in self.cameras.values())

    @property
    def stored_bytes(self) -> int:
        return sum(c.stored_bytes for c in self.cameras.values())

    def add(self, camera: str, removed: Sequence[Removed]) -> None:
        if not removed:
            return
        entry = self.cameras.setdefault(camera, CameraSwept())
        entry.chunks += len(removed)
        entry.stored_bytes += sum(r.stored_bytes for r in removed)
        first = min(r.start_at for r in removed)
        last = max(r.end_at for r in removed)
        entry.start_at = first if entry.start_at is None else min(entry.start_at, first)
        entry.end_at = last if entry.end_at is None else max(entry.end_at, last)


def sweep(*, settings: Settings, camera: str | None = None, limit: int | None = None,
          on_progress: Callable[[int], None] | None = None) -> SweepReport:
    """Delete what the retention rules expire (module doc). ``limit`` caps the chunks
    deleted in this run; ``on_progress`` receives the count deleted so far. One sweep
    runs at a time (``SweepBusy`` otherwise): two would finish each other's
    tombstones and record the same stretches twice."""
    engine = get_engine()
    with engine.connect() as lock:  # a session-level lock, held for the whole sweep
        if not lock.execute(text("SELECT pg_try_advisory_lock(:k)"),
                            {"k": SWEEP_LOCK}).scalar_one():
            raise SweepBusy("another sweep is running; this one was not started")
        try:
            return _sweep(engine, settings, camera=camera, limit=limit,
                          on_progress=on_progress)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SWEEP_LOCK})
            lock.commit()


def _sweep(engine: Engine, settings: Settings, *, camera: str | None, limit: int | None,
           on_progress: Callable[[int], None] | None) -> SweepReport:
    store = get_object_store(settings)
    report = SweepReport(sweep_id=uuid.uuid4())
    while True:
        found, finished = _finish(engine, store, report, sweep_id=None, limit=RESUME_BATCH)
        report.resumed += finished
        if not found:
            break
    with session_scope() as session:
        cameras = [g for g in governed_cameras(session, camera=camera) if g.rule is not None]
    for g in cameras:
        while limit is None or report.chunks < limit:
            batch = settings.sweep_batch if limit is None else \
                min(settings.sweep_batch, limit - report.chunks)
            skip = [r["chunk_id"] for r in report.refused]  # the store keeps them
            if not _tombstone(engine, g, report.sweep_id, batch=batch, skip=skip,
                              floor_days=settings.retention_floor_days):
                break
            _finish(engine, store, report, sweep_id=report.sweep_id, limit=None)
            if on_progress is not None:
                on_progress(report.chunks)
    with session_scope() as session:
        audit.record(session=session, actor="system", action="retention.sweep",
                     target_type="sweep", target_id=str(report.sweep_id),
                     detail={"chunks": report.chunks, "bytes": report.stored_bytes,
                             "resumed": report.resumed, "refused": len(report.refused),
                             "cameras": {name: {"chunks": c.chunks, "bytes": c.stored_bytes}
                                         for name, c in sorted(report.cameras.items())}})
    return report


# --- D1 ------------------------------------------------------------------------------


def _tombstone(engine: Engine, camera: Governed, sweep_id: uuid.UUID, *, batch: int,
               floor_days: int, skip: Sequence[int] = ()) -> int:
    """D1: tombstone and delete up to ``batch`` of the camera's oldest expired chunks,
    under the rule that governs it now (read under the camera's lock: a rule changed
    during a long sweep applies from the next batch), never below the floor."""
    with session_scope(engine) as session:
        lock_camera(session, camera.camera_id)
        (governed,) = governed_cameras(session, camera=camera.camera)
        if governed.rule is None:
            return 0
        keep_days = max(governed.rule.keep_days, floor_days)
        params = {"camera_id": governed.camera_id, "keep_days": keep_days,
                  "skip": list(skip)}
        # Batches end on a multiple of `batch` in seq, so that their object keys share
        # a long prefix and D2 lists little more than the batch (delete_many).
        first = session.execute(text(
            f"SELECT min(c.seq) FROM chunks c WHERE {EXPIRED} "  # noqa: S608
            "AND c.id <> ALL(:skip)"), params).scalar_one()
        if first is None:
            return 0
        # Module constants only are spliced in; values are bound.
        moved = session.execute(text(f"""
            WITH doomed AS (
                SELECT c.* FROM chunks c WHERE {EXPIRED} AND c.id <> ALL(:skip)
                   AND c.seq < :upto
                 ORDER BY c.seq LIMIT :batch FOR UPDATE),
            tombs AS (
                INSERT INTO tombstones (chunk_id, camera_id, seq, start_at, end_at, object_key,
                                        stored_bytes, chain_hash, data_key_id, row, keep_days,
                                        rule, sweep_id)
                SELECT d.id, d.camera_id, d.seq, d.start_at, d.end_at, d.object_key,
                       d.stored_bytes, d.chain_hash, d.data_key_id, to_jsonb(d), :keep_days,
                       :rule, :sweep_id
                  FROM doomed d
                RETURNING chunk_id)
            DELETE FROM chunks WHERE id IN (SELECT chunk_id FROM tombs)"""),  # noqa: S608
            {**params, "rule": governed.rule.scope, "sweep_id": sweep_id, "batch": batch,
             "upto": (first // batch + 1) * batch})
    return moved.rowcount  # type: ignore[attr-defined]


# --- D2 to D5 ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tomb:
    chunk_id: int
    camera: str
    object_key: str
    data_key_id: int
    object_deleted: bool
    key_destroyed: bool
    removed: Removed


def _tombs(engine: Engine, sweep_id: uuid.UUID | None, limit: int | None) -> list[_Tomb]:
    query = """SELECT t.chunk_id, t.camera_id, t.seq, t.start_at, t.end_at, t.object_key,
                      t.stored_bytes, t.chain_hash, t.data_key_id, t.keep_days, t.rule,
                      t.object_deleted_at, t.key_destroyed_at, c.name AS camera
                 FROM tombstones t
                 JOIN cameras c ON c.id = t.camera_id"""
    params: dict[str, Any] = {}
    if sweep_id is not None:
        query += " WHERE t.sweep_id = :sweep_id"
        params["sweep_id"] = sweep_id
    query += " ORDER BY t.camera_id, t.seq"
    if limit is not None:
        query += " LIMIT :limit"
        params["limit"] = limit
    with engine.connect() as conn:
        rows = conn.execute(text(query), params).all()
    return [_Tomb(chunk_id=r.chunk_id, camera=r.camera, object_key=r.object_key,
                  data_key_id=r.data_key_id, object_deleted=r.object_deleted_at is not None,
                  key_destroyed=r.key_destroyed_at is not None,
                  removed=Removed(camera_id=r.camera_id, seq=r.seq, start_at=r.start_at,
                                  end_at=r.end_at, stored_bytes=r.stored_bytes,
                                  chain_hash=bytes(r.chain_hash), keep_days=r.keep_days,
                                  rule=r.rule)) for r in rows]


def _finish(engine: Engine, store: ObjectStore, report: SweepReport, *,
            sweep_id: uuid.UUID | None, limit: int | None) -> tuple[int, int]:
    """D2 to D5 for the tombstones of ``sweep_id`` (all, when None); returns how many
    tombstones there were and how many were finished (the others were refused by the
    store and put back)."""
    tombs = _tombs(engine, sweep_id, limit)
    found = len(tombs)
    if not tombs:
        return 0, 0
    refused = _delete_objects(engine, store, [t for t in tombs if not t.object_deleted])
    if refused:
        _restore(engine, [t for t in tombs if t.object_key in refused], refused, report)
        tombs = [t for t in tombs if t.object_key not in refused]
    _destroy_keys(engine, [t for t in tombs if not t.key_destroyed])
    _record(engine, tombs, report)
    return found, len(tombs)


def _delete_objects(engine: Engine, store: ObjectStore, tombs: Sequence[_Tomb]
                    ) -> dict[str, str]:
    """D2: every version of every object; returns the keys the store refused."""
    if not tombs:
        return {}
    refused = store.delete_many([t.object_key for t in tombs])
    done = [t.chunk_id for t in tombs if t.object_key not in refused]
    if done:
        with engine.begin() as conn:
            conn.execute(text("UPDATE tombstones SET object_deleted_at = now() "
                              "WHERE chunk_id = ANY(:ids)"), {"ids": done})
    return refused


def _restore(engine: Engine, tombs: Sequence[_Tomb], refused: dict[str, str],
             report: SweepReport) -> None:
    """The store refused to delete these objects: it wins. Put the rows back."""
    with session_scope(engine) as session:
        for t in tombs:
            session.execute(text("""
                INSERT INTO chunks SELECT (jsonb_populate_record(NULL::chunks, t.row)).*
                  FROM tombstones t WHERE t.chunk_id = :id"""), {"id": t.chunk_id})
            session.execute(text("DELETE FROM tombstones WHERE chunk_id = :id"),
                            {"id": t.chunk_id})
        for t in tombs:
            detail = {"camera": t.camera, "seq": t.removed.seq, "object_key": t.object_key,
                      "code": refused[t.object_key], "chunk_id": t.chunk_id}
            log.error("ALARM the object store refused to delete %s (camera %s seq %d): "
                      "%s; the chunk is kept", t.object_key, t.camera, t.removed.seq,
                      refused[t.object_key])
            audit.record(session=session, actor="system", action="retention.refused",
                         target_type="chunk", target_id=f"{t.camera}/{t.removed.seq}",
                         detail=detail)
            report.refused.append(detail)


def _destroy_keys(engine: Engine, tombs: Sequence[_Tomb]) -> None:
    """D3: crypto-shredding; after D2, so that until here everything can be undone."""
    if not tombs:
        return
    ids = [t.chunk_id for t in tombs]
    with engine.begin() as conn:
        conn.execute(text("""
            UPDATE data_keys SET wrapped = NULL, destroyed_at = now()
             WHERE id = ANY(:keys) AND wrapped IS NOT NULL"""),
            {"keys": [t.data_key_id for t in tombs]})
        conn.execute(text("UPDATE tombstones SET key_destroyed_at = now() "
                          "WHERE chunk_id = ANY(:ids)"), {"ids": ids})


def _record(engine: Engine, tombs: Sequence[_Tomb], report: SweepReport) -> None:
    """D4+D5: retention records and an audit event, tombstones removed, in one
    transaction."""
    if not tombs:
        return
    names = {t.removed.camera_id: t.camera for t in tombs}
    runs = stretches(t.removed for t in tombs)
    with session_scope(engine) as session:
        for s in runs:
            session.execute(text("""
                INSERT INTO retention_records (camera_id, first_seq, last_seq, chunks,
                    stored_bytes, start_at, end_at, last_chain_hash, keep_days, rule,
                    sweep_id)
                VALUES (:camera_id, :first_seq, :last_seq, :chunks, :stored_bytes,
                        :start_at, :end_at, :last_chain_hash, :keep_days, :rule,
                        :sweep_id)"""),
                {"camera_id": s.camera_id, "first_seq": s.first_seq, "last_seq": s.last_seq,
                 "chunks": s.chunks, "stored_bytes": s.stored_bytes, "start_at": s.start_at,
                 "end_at": s.end_at, "last_chain_hash": s.last_chain_hash,
                 "keep_days": s.keep_days, "rule": s.rule, "sweep_id": report.sweep_id})
        audit.record(session=session, actor="system", action="retention.deleted",
                     target_type="sweep", target_id=str(report.sweep_id),
                     detail={"chunks": len(tombs),
                             "bytes": sum(t.removed.stored_bytes for t in tombs),
                             "stretches": [{"camera": names[s.camera_id],
                                            "first_seq": s.first_seq,
                                            "last_seq": s.last_seq, "rule": s.rule}
                                           for s in runs]})
        session.execute(text("DELETE FROM tombstones WHERE chunk_id = ANY(:ids)"),
                        {"ids": [t.chunk_id for t in tombs]})
    for camera_id, camera in names.items():
        report.add(camera, [t.removed for t in tombs if t.removed.camera_id == camera_id])
