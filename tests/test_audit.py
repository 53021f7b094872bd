"""The audit trail: hash-chained, and append-only in the database itself."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from vigil import audit
from vigil.catalog.models import AuditEvent


def _events(session: Session, n: int) -> list[AuditEvent]:
    start = session.scalars(select(AuditEvent.id).order_by(AuditEvent.id.desc())).first() or 0
    for i in range(n):
        audit.record(session=session, actor="tester", action="test.event",
                     target_type="thing", target_id=str(i), detail={"i": i, "note": "é"})
    return list(session.scalars(select(AuditEvent).where(AuditEvent.id > start)
                                .order_by(AuditEvent.id)))


def _prev(session: Session, events: list[AuditEvent]) -> bytes:
    return events[0].prev_hash


def test_events_link_into_one_chain(session: Session) -> None:
    events = _events(session, 5)
    session.expire_all()  # verify what the database returns, not what we wrote
    events = [session.get(AuditEvent, e.id) for e in events]
    assert audit.verify_chain(events, prev_hash=_prev(session, events)) == 5
    assert all(b.prev_hash == a.event_hash for a, b in zip(events, events[1:], strict=False))


@dataclasses.dataclass
class Fake:
    id: int
    occurred_at: object
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    detail: dict
    prev_hash: bytes
    event_hash: bytes


def _copies(events: list[AuditEvent]) -> list[Fake]:
    return [Fake(**{f.name: getattr(e, f.name) for f in dataclasses.fields(Fake)})
            for e in events]


def test_an_altered_event_is_detected(session: Session) -> None:
    events = _copies(_events(session, 4))
    events[2].detail = {"i": 99}
    with pytest.raises(audit.AuditChainBroken, match="was altered"):
        audit.verify_chain(events, prev_hash=events[0].prev_hash)


@pytest.mark.parametrize("mutation", ["delete", "swap"])
def test_a_removed_or_reordered_event_is_detected(session: Session, mutation: str) -> None:
    events = _copies(_events(session, 4))
    prev = events[0].prev_hash
    if mutation == "delete":
        del events[1]
    else:
        events[1], events[2] = events[2], events[1]
    with pytest.raises(audit.AuditChainBroken, match="does not link"):
        audit.verify_chain(events, prev_hash=prev)


@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET actor = 'mallory'",
    "DELETE FROM audit_events",
    "TRUNCATE audit_events",
])
def test_the_database_refuses_to_change_the_trail(session: Session, statement: str) -> None:
    _events(session, 1)
    with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
        session.execute(text(statement))
