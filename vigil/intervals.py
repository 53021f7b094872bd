"""Half-open interval arithmetic over UTC datetimes: pure functions, no I/O.

Every interval is ``[start, end)``: it contains ``start`` and not ``end``; two
intervals that touch (``a.end == b.start``) do not overlap but are contiguous.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from vigil.errors import InvalidInput

# The instants ``parse_instant`` accepts: none before the Unix epoch (no camera or
# server clock reads earlier) and none past year 9000, so that window arithmetic
# (a day back, a chunk's length back) stays inside ``datetime``'s range.
MIN_INSTANT: Final = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INSTANT: Final = datetime(9000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, order=True)
class Span:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InvalidInput("interval bounds must be timezone-aware (UTC)")
        if not self.end > self.start:
            raise InvalidInput(f"empty interval [{self.start.isoformat()}, "
                               f"{self.end.isoformat()}): the end must be after the start")

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end

    def clip(self, window: Span) -> Span | None:
        start, end = max(self.start, window.start), min(self.end, window.end)
        return Span(start, end) if end > start else None


def merge(spans: Iterable[Span], *, tolerance: timedelta = timedelta(0)) -> list[Span]:
    """Union of ``spans``: sorted, with spans that overlap, touch, or lie within
    ``tolerance`` of each other joined into one."""
    out: list[Span] = []
    for span in sorted(spans):
        if out and span.start <= out[-1].end + tolerance:
            if span.end > out[-1].end:
                out[-1] = Span(out[-1].start, span.end)
        else:
            out.append(span)
    return out


def gaps(covered: Iterable[Span], window: Span) -> list[Span]:
    """The parts of ``window`` that ``covered`` leaves out, in order."""
    out: list[Span] = []
    cursor = window.start
    for span in merge(covered):
        if span.end <= window.start or span.start >= window.end:
            continue
        if span.start > cursor:
            out.append(Span(cursor, span.start))
        cursor = max(cursor, span.end)
    if cursor < window.end:
        out.append(Span(cursor, window.end))
    return out


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant with an explicit offset (``Z`` or ``+08:00``), as UTC.

    A time without an offset is refused: it could mean any of 24 hours.
    """
    try:
        at = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidInput(f"{text!r} is not an ISO 8601 time "
                           "(e.g. 2026-11-21T08:30:00+08:00)") from None
    if at.tzinfo is None:
        raise InvalidInput(f"{text!r} has no UTC offset; add one, e.g. "
                           f"{text.strip()}Z or {text.strip()}+08:00")
    try:
        utc = at.astimezone(UTC)
        in_range = MIN_INSTANT <= utc < MAX_INSTANT
    except OverflowError:  # 0001-01-01T00:00+01:00 is before datetime.min in UTC
        in_range = False
    if not in_range:
        raise InvalidInput(f"{text!r} is out of range: times are from "
                           f"{MIN_INSTANT:%Y-%m-%d} to {MAX_INSTANT:%Y-%m-%d} (UTC)")
    return utc
