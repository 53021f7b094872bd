"""The catalog's time index: constraints, half-open overlap, timelines, the plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tests import factories
from vigil.catalog.queries import chunks_overlapping, overlapping_stmt, recorded_ranges
from vigil.intervals import Span, gaps, merge

T0 = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)  # a DST change day in Europe: irrelevant in UTC


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(("seconds", "constraint"), [
    (0, "ck_chunks_interval_nonempty"),
    (-5, "ck_chunks_interval_nonempty"),
    (601, "ck_chunks_interval_bounded"),
])
def test_chunk_intervals_are_checked_by_the_database(session: Session, seconds: float,
                                                     constraint: str) -> None:
    cam, key = factories.camera(session), factories.kek(session)
    with pytest.raises(IntegrityError, match=constraint), session.begin_nested():
        factories.chunk(session, cam=cam, key=key, seq=0, start_at=T0, seconds=seconds,
                        media_duration_us=1)


def test_hashes_must_be_32_bytes(session: Session) -> None:
    cam, key = factories.camera(session), factories.kek(session)
    with pytest.raises(IntegrityError, match="ck_chunks_sha256_len"), session.begin_nested():
        factories.chunk(session, cam=cam, key=key, seq=0, start_at=T0, sha256=b"short")


def test_a_sequence_number_is_used_once_per_camera(session: Session) -> None:
    cam, key = factories.camera(session), factories.kek(session)
    factories.chunk(session, cam=cam, key=key, seq=7, start_at=T0)
    with pytest.raises(IntegrityError, match="uq_chunks_camera_id_seq"), session.begin_nested():
        factories.chunk(session, cam=cam, key=key, seq=7, start_at=at(60))


def test_overlap_is_half_open_at_both_ends(session: Session) -> None:
    cam, key = factories.camera(session), factories.kek(session)
    other = factories.camera(session)
    for seq in range(5):  # [0,60) [60,120) ... [240,300)
        factories.chunk(session, cam=cam, key=key, seq=seq, start_at=at(60 * seq))
    factories.chunk(session, cam=other, key=key, seq=0, start_at=at(60))

    def seqs(a: float, b: float) -> list[int]:
        return [c.seq for c in chunks_overlapping(session, camera_id=cam.id,
                                                  window=Span(at(a), at(b)))]

    assert seqs(60, 120) == [1]  # the chunk ending at 60 and the one starting at 120: out
    assert seqs(59.999999, 120.000001) == [0, 1, 2]
    assert seqs(0, 300) == [0, 1, 2, 3, 4]
    assert seqs(300, 400) == []


def test_a_chunk_that_began_up_to_the_bound_earlier_is_found(session: Session) -> None:
    cam, key = factories.camera(session), factories.kek(session)
    factories.chunk(session, cam=cam, key=key, seq=0, start_at=T0, seconds=600)
    found = chunks_overlapping(session, camera_id=cam.id, window=Span(at(599), at(700)))
    assert [c.seq for c in found] == [0]


def test_timeline_merges_contiguous_chunks_and_reports_gaps(session: Session) -> None:
    cam, key = factories.camera(session), factories.kek(session)
    for seq, start in enumerate([0, 60, 120, 300, 360]):  # gap [180, 300)
        factories.chunk(session, cam=cam, key=key, seq=seq, start_at=at(start))
    window = Span(at(30), at(400))
    ranges = recorded_ranges(session, camera_id=cam.id, window=window)
    assert ranges == [Span(at(30), at(180)), Span(at(300), at(400))]
    assert gaps(ranges, window) == [Span(at(180), at(300))]


layouts = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 10)), min_size=0, max_size=25)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=layouts, window=st.tuples(st.integers(0, 3000), st.integers(1, 3000)))
def test_timeline_sql_agrees_with_the_pure_merge(session: Session,
                                                 layout: list[tuple[int, int]],
                                                 window: tuple[int, int]) -> None:
    """Random layouts (gaps of 0-40 s between chunks of 1-10 s, in tens of seconds)."""
    nested = session.begin_nested()
    try:
        cam, key = factories.camera(session), factories.kek(session)
        spans, cursor = [], 0.0
        for seq, (gap, length) in enumerate(layout):
            start = cursor + gap * 10
            factories.chunk(session, cam=cam, key=key, seq=seq, start_at=at(start),
                            seconds=length * 10)
            spans.append(Span(at(start), at(start + length * 10)))
            cursor = start + length * 10
        w = Span(at(window[0]), at(window[0] + window[1]))
        expected = [c for s in merge(spans) if (c := s.clip(w)) is not None]
        assert recorded_ranges(session, camera_id=cam.id, window=w) == expected
    finally:
        nested.rollback()


def test_overlap_query_is_a_bounded_index_range_scan(session: Session) -> None:
    """The plan must use the time index with both a lower and an upper bound on
    start_at: a scan bounded only above would read a camera's whole history."""
    cam = factories.camera(session)
    session.execute(text("SET LOCAL enable_seqscan = off"))
    session.execute(text("SET LOCAL enable_bitmapscan = off"))
    stmt = overlapping_stmt(camera_id=cam.id, window=Span(T0, at(3600)))
    compiled = stmt.compile(dialect=postgresql.dialect(),
                            compile_kwargs={"literal_binds": True})
    plan = "\n".join(session.execute(text(f"EXPLAIN {compiled}")).scalars())
    assert "ix_chunks_camera_id_start_at" in plan
    index_cond = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "start_at >" in index_cond and "start_at <" in index_cond


def test_an_object_key_names_one_chunk_only(session: Session) -> None:
    cam, key = factories.camera(session), factories.kek(session)
    factories.chunk(session, cam=cam, key=key, seq=0, start_at=T0, object_key="chunks/x")
    with pytest.raises(IntegrityError, match="uq_chunks_object_key"), session.begin_nested():
        factories.chunk(session, cam=cam, key=key, seq=1, start_at=at(60), object_key="chunks/x")


def test_a_destroyed_data_key_has_no_key_material(session: Session) -> None:
    from vigil.catalog.models import DataKey

    key = factories.kek(session)
    for wrapped, destroyed_at in ((None, None), (b"k" * 40, T0)):
        with pytest.raises(IntegrityError, match="ck_data_keys_destroyed_iff_no_key"), \
                session.begin_nested():
            session.add(DataKey(kek_id=key.id, wrapped=wrapped, destroyed_at=destroyed_at))
            session.flush()
    session.add(DataKey(kek_id=key.id, wrapped=None, destroyed_at=T0))
    session.flush()
