"""The audit trail: hash-chained, append-only in the database itself, its head signed
in checkpoints whose copies in the object store show a cut-off end or a deleted
checkpoint."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from ops import audit_cli
from retention import worm
from tests.support import VIGIL
from vigil import audit, audit_api, audit_tasks, db, keys, objectstore
from vigil.catalog.models import AuditCheckpoint, AuditEvent, Key, KeyPurpose, KeyState
from vigil.errors import ConfigurationError, InvalidInput
from vigil.settings import Settings
from vigil.tasks import BEAT_SCHEDULE, celery_app


@pytest.fixture
def copies(store) -> Iterator[object]:  # noqa: ANN001
    """The test's object store, for checkpoint copies: their legal holds (placed when
    a committed WORM probe found holds enforced) are lifted before it is emptied."""
    yield store
    for name in list(store.list(audit.COPY_PREFIX)):
        store.set_legal_hold(name, on=False)


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


@pytest.mark.parametrize(("mutation", "kind"), [
    ("delete", "removed"), ("swap", "reordered"), ("insert", "inserted")])
def test_a_broken_link_is_classified_by_where_its_hash_is_stored(
        session: Session, mutation: str, kind: str) -> None:
    events = _copies(_events(session, 4))
    prev = events[0].prev_hash
    if mutation == "delete":
        del events[1]
    elif mutation == "swap":
        events[1], events[2] = events[2], events[1]
    else:  # a forged event that links and hashes correctly, between #2 and #3
        forged = dataclasses.replace(events[1], actor="mallory",
                                     prev_hash=events[1].event_hash)
        forged.event_hash = audit.event_digest(**{
            f: getattr(forged, f) for f in ("prev_hash", "occurred_at", "actor", "action",
                                            "target_type", "target_id", "detail")})
        events.insert(2, forged)
    for position, event in enumerate(events, 1):  # ids are positions, as in the table
        event.id = position
    stored = {e.event_hash: e.id for e in events}
    with pytest.raises(audit.AuditChainBroken) as caught:
        audit.verify_chain(events, prev_hash=prev, locate=stored.get)
    assert caught.value.kind == kind


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


def _tamper(session: Session, sql: str, row_id: int = 0, *, table: str = "audit_events",
            **params: object) -> None:
    """Change the trail behind the database's back (the trigger off, in this test's
    transaction only, which is rolled back)."""
    session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
    session.execute(text(sql), {"id": row_id, **params})
    session.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


def test_the_stored_trail_checks_and_tampering_is_named(client, make_token,  # noqa: ANN001
                                                        session: Session, copies) -> None:  # noqa: ANN001
    client.app.dependency_overrides[audit_api.checkpoint_store] = lambda: copies
    auditor = {"Authorization": f"Bearer {make_token('auditor')}"}
    _events(session, 3)
    intact = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert intact["ok"] and intact["failure"] is None and intact["events"] >= 3
    investigator = {"Authorization": f"Bearer {make_token('investigator')}"}
    assert client.get("/api/v1/audit/verify", headers=investigator).status_code == 403

    last = session.execute(text("SELECT max(id) FROM audit_events")).scalar_one()
    _tamper(session, "UPDATE audit_events SET actor = 'mallory' WHERE id = :id", last - 1)
    broken = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert not broken["ok"] and f"audit event #{last - 1}" in broken["failure"]
    assert "was altered" in broken["failure"] and broken["kind"] == "altered"


def test_a_deleted_stored_event_is_named(session: Session, copies) -> None:  # noqa: ANN001
    _events(session, 3)
    last = session.execute(text("SELECT max(id) FROM audit_events")).scalar_one()
    _tamper(session, "DELETE FROM audit_events WHERE id = :id", last - 1)
    check = audit.check_stored(session=session, store=copies)
    assert check.failure is not None and f"audit event #{last}" in check.failure
    assert "does not link" in check.failure and check.kind == "removed"


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


# --- signed checkpoints ------------------------------------------------------------------


@pytest.fixture
def ring(settings: Settings) -> keys.FileKeyRing:
    return keys.file_key_ring(settings.home_dir)


@pytest.fixture
def on_test_session(session: Session, copies, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """The CLI and the task run on the test's session (rolled back) and object store."""
    @contextmanager
    def scope(engine=None) -> Iterator[Session]:  # noqa: ANN001
        yield session
        session.commit()

    def store(_settings: Settings) -> object:
        return copies

    for module in (db, audit_tasks):
        monkeypatch.setattr(module, "session_scope", scope)
    for module in (objectstore, audit_tasks):
        monkeypatch.setattr(module, "get_object_store", store)


def _sign(session: Session, ring: keys.FileKeyRing, store: object, settings: Settings,
          **kwargs: object) -> dict:
    return audit_tasks.run_checkpoint(session=session, store=store, provider=ring,
                                      settings=settings, **kwargs)


def _head(session: Session) -> int:
    return session.execute(text("SELECT max(id) FROM audit_events")).scalar_one()


def _broken(session: Session, store: object, **kwargs: object) -> audit.AuditChainBroken:
    with pytest.raises(audit.AuditChainBroken) as caught:
        audit.verify_stored(session=session, store=store, **kwargs)
    return caught.value


def test_a_checkpoint_signs_the_head_stores_a_copy_and_is_not_signed_twice(
        session: Session, ring: keys.FileKeyRing, copies, settings: Settings,  # noqa: ANN001
        on_test_session: None) -> None:
    _events(session, 3)
    outcome = _sign(session, ring, copies, settings)
    cp = session.get(AuditCheckpoint, outcome["signed"])
    key = session.get(Key, cp.key_id)
    assert (key.purpose, key.state) == (KeyPurpose.AUDIT_SIGNING, KeyState.ACTIVE)
    # The key's creation is on the trail, and the checkpoint covers it.
    created = session.scalars(select(AuditEvent).where(
        AuditEvent.action == "keys.created", AuditEvent.target_id == str(key.id))).one()
    assert created.detail["fingerprint"] == key.fingerprint and created.id <= cp.event_id
    assert cp.event_id == _head(session)
    assert cp.events == session.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
    # The copy is the record, and its signature verifies under the published key.
    copy = json.loads(copies.get(outcome["copy"]))
    assert copy == audit.checkpoint_record(cp, key_fingerprint=key.fingerprint)
    cp_id, statement, signature = audit.parse_record(copy, what="copy")
    audit.check_signature(statement, signature, keys.load_public(key.public_key), what="copy")

    # The head has not moved: nothing is signed, by the task either.
    assert _sign(session, ring, copies, settings)["signed"] is None

    # The beat's entry names the registered task.
    assert celery_app.tasks[BEAT_SCHEDULE["audit-checkpoint"]["task"]] is \
        audit_tasks.checkpoint_task
    assert audit_tasks.checkpoint_task()["signed"] is None
    _events(session, 1)
    assert audit_tasks.checkpoint_task()["signed"] > cp_id
    assert audit.verify_stored(session=session, store=copies).checkpoints == 2


def test_one_checkpoint_run_at_a_time(session: Session, engine, ring: keys.FileKeyRing,  # noqa: ANN001
                                      copies, settings: Settings) -> None:  # noqa: ANN001
    _events(session, 1)
    with engine.connect() as other:
        other.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": audit_tasks._RUN_LOCK})
        assert "skipped" in _sign(session, ring, copies, settings)
        other.rollback()
    assert _sign(session, ring, copies, settings)["signed"] is not None


def test_a_copy_is_put_under_legal_hold_when_the_store_enforces_holds(
        session: Session, ring: keys.FileKeyRing, copies, settings: Settings) -> None:  # noqa: ANN001
    worm.record(session=session, state=worm.WormState("enforced", "test"))
    _events(session, 1)
    outcome = _sign(session, ring, copies, settings)
    assert outcome["legal_hold"]
    assert outcome["copy"] in copies.delete_many([outcome["copy"]])  # refused


def test_the_trail_verifies_with_several_checkpoints_across_a_key_rotation(
        session: Session, ring: keys.FileKeyRing, copies, settings: Settings,  # noqa: ANN001
        ) -> None:
    signed = []
    for round_ in range(3):
        _events(session, 2)
        signed.append(_sign(session, ring, copies, settings))
        if round_ == 1:
            keys.rotate(session=session, provider=ring, purpose=KeyPurpose.AUDIT_SIGNING,
                        actor="test")
    assert len({s["key_fingerprint"] for s in signed}) == 2  # a retired key still verifies
    report = audit.verify_stored(session=session, store=copies)
    assert (report.checkpoints, report.copies, report.pending_copy) == (3, 3, None)
    assert report.latest is not None and report.latest.id == signed[-1]["signed"]
    assert report.latest.key_fingerprint == signed[-1]["key_fingerprint"]
    assert report.head_id == _head(session) and report.events == signed[-1]["events"]


@pytest.mark.parametrize("then_append", [False, True])
def test_truncation_after_a_checkpoint_is_detected(
        session: Session, ring: keys.FileKeyRing, copies, settings: Settings,  # noqa: ANN001
        then_append: bool) -> None:
    events = _events(session, 5)
    cp = _sign(session, ring, copies, settings)
    _tamper(session, "DELETE FROM audit_events WHERE id >= :id", events[3].id)
    if not then_append:
        failure = _broken(session, copies)
        assert failure.kind == "truncated"
        left = session.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
        assert (f"the trail ends at event #{events[2].id} ({left} events), but "
                f"checkpoint #{cp['signed']} (signed ") in str(failure)
        assert (f"covers event #{cp['event_id']} ({cp['events']} events): events were removed "
                "from the end") in str(failure)
    else:  # the trail goes on from the cut: still a valid chain, but not the signed one
        _events(session, 3)
        failure = _broken(session, copies)
        assert failure.kind == "removed"
        assert f"covers event #{cp['event_id']}), but event #{cp['event_id']} is not in the " \
            "trail" in str(failure)
    # A cut-off trail is never signed.
    with pytest.raises(audit.AuditChainBroken, match="the trail was truncated or rewritten"):
        audit.sign_checkpoint(session=session, provider=ring)


def _swap(session: Session, a: int, b: int) -> None:
    """Swap two events' contents (everything but the id): the pair is reordered."""
    session.execute(text("CREATE TEMPORARY TABLE swapped AS "
                         "SELECT * FROM audit_events WHERE id IN (:a, :b)"), {"a": a, "b": b})
    copy_from = ("UPDATE audit_events e SET (occurred_at, principal_id, actor, action, "
                 "target_type, target_id, detail, prev_hash, event_hash) = (s.occurred_at, "
                 "s.principal_id, s.actor, s.action, s.target_type, s.target_id, s.detail, "
                 "s.prev_hash, s.event_hash) FROM swapped s WHERE e.id = :id AND s.id = :other")
    # event_hash is unique: a's is moved out of the way first.
    _tamper(session, "UPDATE audit_events SET event_hash = sha256(event_hash) WHERE id = :id", a)
    _tamper(session, copy_from, b, other=a)
    _tamper(session, copy_from, a, other=b)
    session.execute(text("DROP TABLE swapped"))


def test_a_reordered_pair_is_detected(session: Session, copies) -> None:  # noqa: ANN001
    events = _events(session, 4)
    _swap(session, events[1].id, events[2].id)
    failure = _broken(session, copies)
    assert failure.kind == "reordered"
    assert (f"audit event #{events[1].id}: does not link to the event before it: it links to "
            f"event #{events[2].id}, which is stored after it") in str(failure)


@pytest.mark.parametrize("where", ["row", "copy"])
def test_an_altered_checkpoint_is_detected(session: Session, ring: keys.FileKeyRing,
                                           copies, settings: Settings,  # noqa: ANN001
                                           where: str) -> None:
    _events(session, 2)
    outcome = _sign(session, ring, copies, settings)
    if where == "row":  # a byte of the signature
        _tamper(session, "UPDATE audit_checkpoints SET signature = overlay(signature placing "
                "decode(CASE WHEN get_byte(signature, 0) = 0 THEN '01' ELSE '00' END, "
                "'hex') from 1 for 1) WHERE id = :id", outcome["signed"],
                table="audit_checkpoints")
        failure = _broken(session, copies)
        assert f"checkpoint #{outcome['signed']} (signed " in str(failure)
    else:  # the copy claims a longer trail
        record = json.loads(copies.get(outcome["copy"]))
        record["events"] += 10
        copies.set_legal_hold(outcome["copy"], on=False)
        copies.delete(outcome["copy"])
        copies.put(outcome["copy"], json.dumps(record).encode())
        failure = _broken(session, copies)
        assert f"the copy {outcome['copy']}" in str(failure)
    assert failure.kind == "checkpoint_altered"
    assert "its signature does not verify under key" in str(failure)


@pytest.mark.parametrize("tail", [False, True])
def test_a_deleted_checkpoint_row_is_detected_through_its_copy(
        session: Session, ring: keys.FileKeyRing, copies, settings: Settings,  # noqa: ANN001
        tail: bool) -> None:
    _events(session, 2)
    _sign(session, ring, copies, settings)
    events = _events(session, 2)
    newest = _sign(session, ring, copies, settings)
    _tamper(session, "DELETE FROM audit_checkpoints WHERE id = :id", newest["signed"],
            table="audit_checkpoints")
    if tail:  # and the events it covered: the database alone now looks intact
        _tamper(session, "DELETE FROM audit_events WHERE id >= :id", events[0].id)
    failure = _broken(session, copies)
    assert (f"checkpoint #{newest['signed']} (signed ") in str(failure)
    assert "is in the object store but not in the database: its row was deleted" \
        in str(failure)
    assert failure.kind == ("truncated" if tail else "checkpoint_missing")
    assert ("events were removed from the end" in str(failure)) is tail


def test_a_checkpoint_without_its_copy_is_detected_after_the_grace(
        session: Session, ring: keys.FileKeyRing, copies, settings: Settings) -> None:  # noqa: ANN001
    _events(session, 1)
    outcome = _sign(session, ring, copies, settings)
    copies.set_legal_hold(outcome["copy"], on=False)
    copies.delete(outcome["copy"])  # as if the run stopped between its commit and the copy
    report = audit.verify_stored(session=session, store=copies)
    assert report.pending_copy == outcome["signed"] and report.notes
    signed_at = session.get(AuditCheckpoint, outcome["signed"]).signed_at
    failure = _broken(session, copies, now=signed_at + audit.COPY_GRACE)
    assert failure.kind == "checkpoint_missing" and "has no copy in the object store" \
        in str(failure)
    # The next run stores it (and has nothing else to sign).
    again = _sign(session, ring, copies, settings)
    assert (again["signed"], again["stored_missing_copy"]) == (None, outcome["signed"])
    audit.verify_stored(session=session, store=copies, now=signed_at + timedelta(days=1))


def test_a_different_copy_is_never_replaced(session: Session, ring: keys.FileKeyRing,
                                           copies, settings: Settings) -> None:  # noqa: ANN001
    _events(session, 1)
    outcome = _sign(session, ring, copies, settings)
    cp = session.get(AuditCheckpoint, outcome["signed"])
    record = audit.checkpoint_record(cp, key_fingerprint=outcome["key_fingerprint"])
    assert audit.store_copy(store=copies, record=record, hold=False) == outcome["copy"]
    with pytest.raises(audit.AuditChainBroken, match="already holds a different copy"):
        audit.store_copy(store=copies, record=record | {"events": 1}, hold=False)


class _Overlapping:
    """The test's store, whose listing of the copies overlaps checkpoint runs: ``before``
    run before the names are read, ``after`` once they are (as a run committing and
    storing its copy while verification lists them)."""

    def __init__(self, inner: object, *, before: list, after: list) -> None:
        self.inner, self.before, self.after = inner, before, after

    def list(self, prefix: str = "") -> Iterator[str]:
        for run in self.before:
            run()
        names = list(self.inner.list(prefix))
        for run in self.after:
            run()
        return iter(names)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("overlap", ["run_before_listing", "rotation_and_run_before_listing",
                                     "two_runs_after_listing"])
def test_a_checkpoint_run_during_verification_is_not_tampering(
        session: Session, ring: keys.FileKeyRing, copies, settings: Settings,  # noqa: ANN001
        overlap: str) -> None:
    _events(session, 2)
    _sign(session, ring, copies, settings)

    def run() -> None:
        _events(session, 1)
        assert _sign(session, ring, copies, settings)["signed"] is not None

    def rotate_and_run() -> None:
        keys.rotate(session=session, provider=ring, purpose=KeyPurpose.AUDIT_SIGNING,
                    actor="test")
        run()

    store = {"run_before_listing": _Overlapping(copies, before=[run], after=[]),
             "rotation_and_run_before_listing": _Overlapping(copies, before=[rotate_and_run],
                                                             after=[]),
             "two_runs_after_listing": _Overlapping(copies, before=[], after=[run, run]),
             }[overlap]
    report = audit.verify_stored(session=session, store=store)
    signed = 1 + len(store.before) + len(store.after)
    assert (report.checkpoints, report.copies, report.pending_copy) == (signed, signed, None)
    assert report.head_id == _head(session)


def test_verification_refuses_a_snapshot_older_than_the_listing(engine, copies) -> None:  # noqa: ANN001
    with engine.connect() as conn, Session(
            bind=conn.execution_options(isolation_level="REPEATABLE READ")) as other:
        with pytest.raises(ConfigurationError, match="READ COMMITTED, not repeatable read"):
            audit.verify_stored(session=other, store=copies)


# --- the CLI and the API say the same; the offline check ---------------------------------


@pytest.fixture
def cli(on_test_session: None):  # noqa: ANN201 - a runner
    """``vigil audit ...`` in-process, on the test's session and object store."""
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(audit_cli.audit_app, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return " ".join(result.output.split())  # rich wraps long lines

    return run


def test_the_cli_and_the_api_report_the_same(session: Session, client, make_token,  # noqa: ANN001
                                             copies, cli) -> None:  # noqa: ANN001
    client.app.dependency_overrides[audit_api.checkpoint_store] = lambda: copies
    auditor = {"Authorization": f"Bearer {make_token('auditor')}"}
    events = _events(session, 3)
    assert "signed checkpoint #" in cli("checkpoint")
    assert "nothing to sign" in cli("checkpoint")

    intact = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert intact["ok"] and intact["kind"] is None and intact["checkpoints"] == 1
    latest = intact["latest_checkpoint"]
    said = cli("verify")
    assert f"INTACT: {intact['events']} event(s)" in said
    assert f"latest checkpoint #{latest['id']}: event #{latest['event_id']}" in said
    assert latest["key_fingerprint"] in said

    listed = client.get("/api/v1/audit/checkpoints", headers=auditor)
    assert listed.status_code == 200 and [c["checkpoint_id"] for c in listed.json()] == \
        [latest["id"]]
    investigator = {"Authorization": f"Bearer {make_token('investigator')}"}
    assert client.get("/api/v1/audit/checkpoints", headers=investigator).status_code == 403

    _tamper(session, "DELETE FROM audit_events WHERE id >= :id", events[1].id)
    broken = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert not broken["ok"] and broken["kind"] == "truncated"
    said = cli("verify", code=1)
    assert f"BROKEN ({broken['kind']}) after {broken['events']} intact event(s)" in said
    assert " ".join(broken["failure"].split()) in said


def test_an_export_checks_offline_against_its_checkpoints(
        session: Session, client, make_token, cli, tmp_path: Path) -> None:  # noqa: ANN001
    auditor = {"Authorization": f"Bearer {make_token('auditor')}"}
    start = datetime.now(UTC) - timedelta(seconds=1)
    _events(session, 3)
    cli("checkpoint")
    _events(session, 2)
    cli("checkpoint")
    _events(session, 1)  # after the last checkpoint: in the export, not yet signed
    events, cps = tmp_path / "events.jsonl", tmp_path / "checkpoints.jsonl"
    assert "wrote 2 checkpoint(s)" in cli("export", "-o", str(events), "--from",
                                          start.isoformat(), "--checkpoints", str(cps))
    published = tmp_path / "keys.json"  # what an auditor saves from the issuing office
    published.write_text(client.get("/api/v1/keys", headers=auditor).text)
    said = cli("check-export", str(events), "--checkpoints", str(cps),
               "--trusted-key", str(published))
    assert "INTACT:" in said and "2 checkpoint(s) verified against them" in said

    rows = [json.loads(line) for line in events.read_text().splitlines()]
    records = [json.loads(line) for line in cps.read_text().splitlines()]
    trusted = {r["key_fingerprint"]: keys.load_public(session.scalars(select(Key.public_key)
               .where(Key.fingerprint == r["key_fingerprint"])).one()) for r in records}
    assert audit.check_export(rows, records, trusted=trusted).checkpoints == 2
    covered = next(i for i, r in enumerate(rows) if r["id"] == records[0]["event_id"])
    with pytest.raises(audit.AuditChainBroken, match="nothing ties it to a signed head"):
        audit.check_export(rows[:covered], records, trusted=trusted)  # cut before any
    with pytest.raises(audit.AuditChainBroken, match="does not link"):
        audit.check_export([*rows[:covered], *rows[covered + 1:]], records, trusted=trusted)
    with pytest.raises(audit.AuditChainBroken, match="was altered"):
        audit.check_export([*rows[:1], rows[1] | {"actor": "mallory"}, *rows[2:]], records,
                           trusted=trusted)
    with pytest.raises(audit.AuditChainBroken, match="not among the trusted keys"):
        audit.check_export(rows, records, trusted={})
    forged = records[0] | {"events": records[0]["events"] - 1}
    with pytest.raises(audit.AuditChainBroken, match="signature does not verify"):
        audit.check_export(rows, [forged], trusted=trusted)
    # The branch for a checkpoint whose event the export lacks: the event it covers is
    # dropped and every event after it re-hashed, so that the chain still links.
    second = next(i for i, r in enumerate(rows) if r["id"] == records[1]["event_id"])
    assert second < len(rows) - 1  # an event after it: the checkpoint is within the export
    with pytest.raises(audit.AuditChainBroken, match="which the export lacks: events were "
                       "removed from the export") as caught:
        audit.check_export(_rehashed([*rows[:second], *rows[second + 1:]]), records,
                           trusted=trusted)
    assert caught.value.kind == "removed"
    # Dropped before a checkpoint and re-hashed: that checkpoint's hash no longer matches.
    with pytest.raises(audit.AuditChainBroken, match="the trail was rewritten"):
        audit.check_export(_rehashed([*rows[:second - 1], *rows[second:]]), records,
                           trusted=trusted)
    # The caveat (audit.md): events dropped from the start of a mid-trail export, before
    # its first covered checkpoint, leave an export that checks.
    assert rows[0]["prev_hash"] != audit.GENESIS.hex() and covered > 1
    assert audit.check_export(rows[1:], records, trusted=trusted).checkpoints == 2


def _rehashed(rows: list[dict]) -> list[dict]:
    """Exported rows re-linked and re-hashed from the first one's ``prev_hash``, as a
    forger who drops an event from an export would have to."""
    out, prev = [], bytes.fromhex(rows[0]["prev_hash"])
    for row in rows:
        digest = audit.event_digest(
            prev_hash=prev, occurred_at=datetime.fromisoformat(row["occurred_at"]),
            actor=row["actor"], action=row["action"], target_type=row["target_type"],
            target_id=row["target_id"], detail=row["detail"])
        out.append(row | {"prev_hash": prev.hex(), "event_hash": digest.hex()})
        prev = digest
    return out


def test_export_checks_both_output_paths_before_writing(cli, tmp_path: Path) -> None:  # noqa: ANN001
    events, cps = tmp_path / "events.jsonl", tmp_path / "checkpoints.jsonl"
    cps.write_text("kept\n")
    with pytest.raises(InvalidInput, match=f"{cps} exists"):
        cli("export", "-o", str(events), "--checkpoints", str(cps))
    with pytest.raises(InvalidInput, match="is the events' output file"):
        cli("export", "-o", str(events), "--checkpoints", str(events))
    with pytest.raises(InvalidInput, match=f"{tmp_path / 'nowhere'} is not a directory"):
        cli("export", "-o", str(events), "--checkpoints", str(tmp_path / "nowhere" / "c"))
    with pytest.raises(InvalidInput, match="unknown export format 'xml'"):
        cli("export", "-o", str(events), "--format", "xml")
    assert not events.exists() and cps.read_text() == "kept\n"


@pytest.fixture
def offline(tmp_path: Path) -> dict[str, Path]:
    """Files for `vigil audit check-export` that parse: a trusted key (hex), no
    checkpoints, one export line (which no checkpoint covers)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw,
                                                                    PublicFormat.Raw)
    files = {"key": tmp_path / "key.hex", "checkpoints": tmp_path / "checkpoints.jsonl",
             "events": tmp_path / "events.jsonl"}
    files["key"].write_text(public.hex() + "\n")
    files["checkpoints"].write_text("")
    row = {"id": 1, "occurred_at": "2026-01-01T00:00:00.000000+00:00", "actor": "a",
           "action": "b", "target_type": None, "target_id": None, "detail": {},
           "prev_hash": audit.GENESIS.hex()}
    row["event_hash"] = audit.event_digest(
        prev_hash=audit.GENESIS, occurred_at=datetime.fromisoformat(row["occurred_at"]),
        actor="a", action="b", target_type=None, target_id=None, detail={}).hex()
    files["events"].write_text(json.dumps(row) + "\n")
    return files


def _check_export_args(files: dict[str, Path]) -> list[str]:
    return ["check-export", str(files["events"]), "--checkpoints", str(files["checkpoints"]),
            "--trusted-key", str(files["key"])]


@pytest.mark.parametrize(("which", "name", "content", "says"), [
    ("events", "events.csv", "id,occurred_at,actor\n1,2026-01-01,a\n",
     "events.csv, line 1: not JSON (check-export reads exports in the jsonl format, not csv)"),
    ("events", "events.jsonl", "{}\n\n", "events.jsonl, line 1: not an exported audit event"),
    ("events", "blank.jsonl", None, "blank.jsonl, line 2: not JSON"),  # after a good line
    ("events", "events.jsonl", b"\xff\n", "events.jsonl, line 1: not UTF-8 text"),
    ("checkpoints", "cps.jsonl", '{"format": "x"}\nnot json\n', "cps.jsonl, line 2: not JSON"),
    ("checkpoints", "cps.json", '[\n{"a": 1},\n]\n', "cps.json, line 3: not JSON"),
    ("key", "keys.json", '[{"purpose": "audit_signing", "version": 2, "public_key_hex": "zz"}]',
     "keys.json: entry 1 (audit signing key version 2): public_key_hex is not a hex "
     "Ed25519 public key"),
    ("key", "keys.json", '[{"purpose": "audit_signing", "public_key_hex": "00ff"}]',
     "keys.json: entry 1 (audit signing key version None): public_key_hex is not a hex"),
    ("key", "keys.json", "[{", "keys.json, line 1: not JSON"),
    ("key", "key.pem", "not a key", "key.pem: a public key is a PEM file, 32 raw bytes or 64"),
])
def test_check_export_names_the_file_and_line_it_cannot_read(
        offline: dict[str, Path], which: str, name: str, content: str | bytes | None,
        says: str) -> None:
    path = offline[which].with_name(name)
    if content is None:  # the good export line, then a blank one
        content = offline[which].read_text() + "\n"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = CliRunner().invoke(audit_cli.audit_app, _check_export_args(offline | {which: path}))
    assert isinstance(result.exception, InvalidInput), result.output
    assert says in str(result.exception)


def test_check_export_on_a_file_it_cannot_read_exits_cleanly(
        offline: dict[str, Path]) -> None:
    offline["events"].write_text("id,occurred_at\n")  # a --format csv export
    done = subprocess.run([*VIGIL, "audit", *_check_export_args(offline)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "error:" in done.stderr and "line 1: not JSON" in " ".join(done.stderr.split())
