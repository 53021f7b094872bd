"""Half-open interval arithmetic: examples and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.errors import InvalidInput
from vigil.intervals import Span, gaps, merge

T0 = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def span(a: float, b: float) -> Span:
    return Span(at(a), at(b))


def test_touching_intervals_do_not_overlap_but_merge() -> None:
    assert not span(0, 10).overlaps(span(10, 20))
    assert span(0, 10).overlaps(span(9.999999, 20))
    assert merge([span(10, 20), span(0, 10)]) == [span(0, 20)]


def test_empty_and_naive_intervals_are_refused() -> None:
    with pytest.raises(InvalidInput, match="empty interval"):
        span(5, 5)
    with pytest.raises(InvalidInput, match="timezone-aware"):
        Span(datetime(2026, 1, 1), datetime(2026, 1, 2))  # noqa: DTZ001


def test_gaps_are_the_complement_within_the_window() -> None:
    covered = [span(10, 20), span(30, 40)]
    assert gaps(covered, span(0, 50)) == [span(0, 10), span(20, 30), span(40, 50)]
    assert gaps(covered, span(12, 18)) == []
    assert gaps([], span(0, 5)) == [span(0, 5)]


def test_tolerance_joins_near_neighbours_only() -> None:
    assert merge([span(0, 10), span(10.5, 20)], tolerance=timedelta(seconds=1)) == [span(0, 20)]
    assert len(merge([span(0, 10), span(11.5, 20)], tolerance=timedelta(seconds=1))) == 2


spans = st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 100)), max_size=30).map(
    lambda pairs: [span(a, a + d) for a, d in pairs])


@given(spans, st.integers(0, 1000), st.integers(1, 500))
def test_covered_and_gaps_partition_the_window(covered: list[Span], a: int, d: int) -> None:
    window = span(a, a + d)
    clipped = [c for s in merge(covered) if (c := s.clip(window)) is not None]
    holes = gaps(covered, window)
    pieces = sorted(clipped + holes)
    assert sum((p.duration for p in pieces), timedelta()) == window.duration
    for left, right in zip(pieces, pieces[1:], strict=False):
        assert left.end == right.start  # no overlap, no hole
    assert all(not h.overlaps(c) for h in holes for c in covered)


@given(spans)
def test_merge_is_idempotent_and_disjoint(covered: list[Span]) -> None:
    merged = merge(covered)
    assert merge(merged) == merged
    assert all(a.end < b.start for a, b in zip(merged, merged[1:], strict=False))
