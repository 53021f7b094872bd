"""A camera's timeline over a window: recorded ranges and gaps, with the gaps' causes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from vigil.catalog.models import RecordingGap, RetentionRecord
from vigil.catalog.queries import recorded_ranges
from vigil.errors import InvalidInput
from vigil.intervals import Span, gaps, parse_instant

MAX_WINDOW: Final = timedelta(days=31)
DEFAULT_WINDOW: Final = timedelta(days=1)


@dataclass(frozen=True)
class Gap:
    span: Span
    cause: str  # a recorded gap's cause, "retention" for deleted footage, else "unrecorded"
    detail: str = ""


@dataclass(frozen=True)
class Timeline:
    window: Span
    recorded: list[Span]
    gaps: list[Gap]


def window_of(start: str | datetime | None, end: str | datetime | None) -> Span:
    """[start, end) from ISO 8601 texts with offsets (default: the last day)."""
    t1 = (parse_instant(end) if isinstance(end, str) else end) or datetime.now(UTC)
    t0 = (parse_instant(start) if isinstance(start, str) else start) or t1 - DEFAULT_WINDOW
    if t0.tzinfo is None or t1.tzinfo is None:
        raise InvalidInput("times need a UTC offset")
    if not t0 < t1:
        raise InvalidInput("the window must end after it starts")
    if t1 - t0 > MAX_WINDOW:
        raise InvalidInput(f"a timeline window is at most {MAX_WINDOW.days} days")
    return Span(t0, t1)


def timeline(session: Session, *, camera_id: int, window: Span) -> Timeline:
    recorded = recorded_ranges(session, camera_id=camera_id, window=window)
    holes = gaps(recorded, window)
    explained = session.scalars(select(RecordingGap).where(
        RecordingGap.camera_id == camera_id, RecordingGap.start_at < window.end,
        RecordingGap.end_at > window.start).order_by(RecordingGap.start_at)).all()

    removed = session.scalars(select(RetentionRecord).where(
        RetentionRecord.camera_id == camera_id, RetentionRecord.start_at < window.end,
        RetentionRecord.end_at > window.start).order_by(RetentionRecord.start_at)).all()

    def explain(hole: Span) -> Gap:
        for gap in explained:
            if gap.start_at < hole.end and gap.end_at > hole.start:
                return Gap(hole, gap.cause.value, gap.detail)
        for record in removed:
            if record.start_at < hole.end and record.end_at > hole.start:
                return Gap(hole, "retention", f"{record.chunks} chunk(s) deleted under "
                                              f"{record.rule} ({record.keep_days} days)")
        return Gap(hole, "unrecorded")

    return Timeline(window=window, recorded=recorded, gaps=[explain(h) for h in holes])
