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


# --- the stored trail: checked and exported (auditor API, CLI) ----------------------------


def _tamper(session: Session, sql: str, event_id: int) -> None:
    """Change the trail behind the database's back (the trigger off, in this test's
    transaction only, which is rolled back)."""
    session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
    session.execute(text(sql), {"id": event_id})
    session.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


def test_the_stored_trail_checks_and_tampering_is_named(client, make_token,  # noqa: ANN001
                                                        session: Session) -> None:
    auditor = {"Authorization": f"Bearer {make_token('auditor')}"}
    _events(session, 3)
    intact = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert intact["ok"] and intact["failure"] is None and intact["events"] >= 3
    investigator = {"Authorization": f"Bearer {make_token('investigator')}"}
    assert client.get("/api/v1/audit/verify", headers=investigator).status_code == 403

    last = session.execute(text("SELECT max(id) FROM audit_events")).scalar_one()
    _tamper(session, "UPDATE audit_events SET actor = 'mallory' WHERE id = :id", last - 1)
    broken = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert not broken["ok"] and f"audit event {last - 1}" in broken["failure"]
    assert "was altered" in broken["failure"]


def test_a_deleted_stored_event_is_named(session: Session) -> None:
    _events(session, 3)
    last = session.execute(text("SELECT max(id) FROM audit_events")).scalar_one()
    _tamper(session, "DELETE FROM audit_events WHERE id = :id", last - 1)
    check = audit.check_stored(session)
    assert check.failure is not None and f"audit event {last}" in check.failure
    assert "does not link" in check.failure


def test_the_trail_exports_as_json_lines_and_csv_that_recompute(tmp_path) -> None:  # noqa: ANN001
    import csv
    import json
    from datetime import UTC, datetime, timedelta

    from typer.testing import CliRunner

    from ops.cli import app
    from vigil.db import session_scope

    start = datetime.now(UTC) - timedelta(seconds=1)
    with session_scope() as s:
        audit.record(session=s, actor="test", action="test.export", detail={"n": 1})
    cli = CliRunner()
    result = cli.invoke(app, ["audit", "export", "-o", str(tmp_path / "a.jsonl"),
                              "--from", start.isoformat()])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["action"] == "test.export"]
    assert mine and all(r["occurred_at"] >= start.isoformat()[:19] for r in rows)
    for row in mine:  # an export re-computes without the database
        assert audit.event_digest(
            prev_hash=bytes.fromhex(row["prev_hash"]),
            occurred_at=datetime.fromisoformat(row["occurred_at"]), actor=row["actor"],
            action=row["action"], target_type=row["target_type"],
            target_id=row["target_id"], detail=row["detail"]).hex() == row["event_hash"]
    result = cli.invoke(app, ["audit", "export", "-o", str(tmp_path / "a.csv"),
                              "--from", start.isoformat(), "--format", "csv"])
    assert result.exit_code == 0, result.output
    with (tmp_path / "a.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["event_hash"] for r in table] == [r["event_hash"] for r in rows]
    assert cli.invoke(app, ["audit", "verify"]).exit_code == 0
