"""Time-index queries on the catalog, and the chain hash a chunk links to.

Both queries bound the scan on ``(camera_id, start_at)`` from below by
``t0 - MAX_CHUNK_WALL_S``: a chunk that starts earlier cannot reach ``t0``
(the database enforces the bound), so the index range scan reads only rows that
can overlap the window, however long the camera's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from vigil.catalog.models import MAX_CHUNK_WALL_S, Chunk, RetentionRecord
from vigil.chain import GENESIS
from vigil.intervals import Span

_MAX_CHUNK_WALL = timedelta(seconds=MAX_CHUNK_WALL_S)
# Windows that start within a chunk's length of datetime.min scan from it.
_SCAN_FLOOR = datetime.min.replace(tzinfo=UTC) + _MAX_CHUNK_WALL


def overlapping_stmt(*, camera_id: int, window: Span) -> Select[tuple[Chunk]]:
    return (
        select(Chunk)
        .where(Chunk.camera_id == camera_id,
               Chunk.start_at > max(window.start, _SCAN_FLOOR) - _MAX_CHUNK_WALL,
               Chunk.start_at < window.end,
               Chunk.end_at > window.start)
        .order_by(Chunk.start_at)
    )


def chunks_overlapping(session: Session, *, camera_id: int, window: Span) -> Sequence[Chunk]:
    """Chunks of one camera that overlap ``window``, in time order."""
    return session.scalars(overlapping_stmt(camera_id=camera_id, window=window)).all()


# Gaps and islands over the chunks that overlap the window: a chunk that starts
# later than every earlier chunk's end (plus tolerance) opens a new recorded range.
_TIMELINE_SQL = text("""
WITH c AS (
    SELECT start_at, end_at
    FROM chunks
    WHERE camera_id = :camera_id
      AND start_at > :t0 - make_interval(secs => :max_chunk_s)
      AND start_at < :t1
      AND end_at > :t0
), marked AS (
    SELECT start_at, end_at,
           CASE WHEN start_at <= max(end_at) OVER (
                    ORDER BY start_at ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                    + make_interval(secs => :tolerance_s)
                THEN 0 ELSE 1 END AS opens
    FROM c
), grouped AS (
    SELECT start_at, end_at, sum(opens) OVER (ORDER BY start_at) AS island
    FROM marked
)
SELECT greatest(min(start_at), :t0) AS start_at, least(max(end_at), :t1) AS end_at
FROM grouped
GROUP BY island
ORDER BY 1
""")


def recorded_ranges(session: Session, *, camera_id: int, window: Span,
                    tolerance: timedelta = timedelta(0)) -> list[Span]:
    """Where one camera has footage within ``window``: merged, clipped to the window.

    ``tolerance`` joins ranges separated by at most it (0: only touching chunks).
    The gaps are ``vigil.intervals.gaps(recorded_ranges(...), window)``.
    """
    rows = session.execute(_TIMELINE_SQL, {
        "camera_id": camera_id, "t0": window.start, "t1": window.end,
        "max_chunk_s": MAX_CHUNK_WALL_S, "tolerance_s": tolerance.total_seconds(),
    }).all()
    return [Span(r.start_at, r.end_at) for r in rows]


def chain_hash_before(session: Session, *, camera_id: int, seq: int) -> bytes | None:
    """The chain hash chunk ``seq`` links to: GENESIS for a camera's first chunk, the
    previous chunk's, or, where retention removed it, the last chain hash of the
    retention record that ends just before ``seq``; None when none of them exists
    (a chunk missing without a record: loss or tampering)."""
    if seq == 0:
        return GENESIS
    before = session.scalars(select(Chunk.chain_hash).where(
        Chunk.camera_id == camera_id, Chunk.seq == seq - 1)).first()
    if before is not None:
        return bytes(before)
    recorded = session.scalars(select(RetentionRecord.last_chain_hash).where(
        RetentionRecord.camera_id == camera_id, RetentionRecord.last_seq == seq - 1)
        .limit(1)).first()
    return None if recorded is None else bytes(recorded)
