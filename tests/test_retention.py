"""Retention on real servers: rules and their floor, previews, the sweeper (crashed at
each step and run again), holds, S3 object lock on the embedded server, shredding.

Footage is imported through the recorder's import path (sealed chunks in the real S3
server, chained, checkpointed) at dates old enough to expire. Every test that sweeps
gives its own camera a rule of its own, so that no other test's footage is touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from recorder import importer, service
from retention import policy, sweep, worm
from retention import service as retention
from retention.policy import Rule, RuleSet, governing
from retrieval.timeline import timeline
from tests.media import encode
from vigil import keys
from vigil.catalog.models import (
    AuditEvent,
    Camera,
    Case,
    Chunk,
    DataKey,
    Hold,
    Principal,
    Region,
    RegionLevel,
    RetentionRecord,
)
from vigil.db import session_scope
from vigil.errors import InvalidInput, NotFound, VigilError
from vigil.intervals import Span
from vigil.objectstore import get_object_store
from vigil.settings import Settings

OLD = timedelta(days=40)
KEEP_DAYS = 30
CHUNK_S = 4


@dataclass(frozen=True)
class Footage:
    camera: str
    camera_id: int
    old: importer.ImportResult  # 40 days ago: expired under a 30-day rule
    recent: importer.ImportResult  # an hour ago: kept


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=12, gop=25)


def _footage(settings: Settings, clip: Path) -> Footage:
    name = f"ret-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        service.add_camera(session=session, name=name, url="rtsp://127.0.0.1:9/none",
                           chunk_seconds=CHUNK_S, actor="test")
    now = datetime.now(UTC).replace(microsecond=0)
    old = importer.import_file(settings=settings, path=clip, camera_name=name,
                               start_at=now - OLD, actor="test")
    recent = importer.import_file(settings=settings, path=clip, camera_name=name,
                                  start_at=now - timedelta(hours=1), actor="test")
    return Footage(camera=name, camera_id=old.camera_id, old=old, recent=recent)


@pytest.fixture
def footage(settings: Settings, engine: Any, clip: Path) -> Footage:
    return _footage(settings, clip)


def _admin() -> Principal:
    with session_scope() as session:
        name = f"admin-{uuid.uuid4().hex[:8]}"
        session.execute(text("INSERT INTO principals (name, role) VALUES (:n, 'admin')"),
                        {"n": name})
        row = session.scalars(select(Principal).where(Principal.name == name)).one()
        session.expunge(row)
        return row


def _rule(camera: str, keep_days: int = KEEP_DAYS) -> None:
    with session_scope() as session:
        retention.set_rule(session=session, scope=retention.Scope(camera=camera),
                           keep_days=keep_days, floor_days=15, principal=_admin())


def _seqs(camera_id: int) -> list[int]:
    with session_scope() as session:
        return list(session.scalars(select(Chunk.seq).where(Chunk.camera_id == camera_id)
                                    .order_by(Chunk.seq)))


def _rows(camera_id: int) -> list[dict[str, Any]]:
    with session_scope() as session:
        return [r[0] for r in session.execute(text(
            "SELECT to_jsonb(c) FROM chunks c WHERE camera_id = :c ORDER BY seq"),
            {"c": camera_id})]


def _old_seqs(f: Footage) -> list[int]:
    return list(range(f.old.first_seq, f.old.last_seq + 1))


def _assert_swept(settings: Settings, f: Footage, removed: list[int],
                  keys_of: dict[int, tuple[str, int, bytes]]) -> None:
    """Catalog and storage agree that ``removed`` are gone, by the delete path."""
    assert not set(_seqs(f.camera_id)) & set(removed)
    store = get_object_store(settings)
    with session_scope() as session:
        assert session.execute(text("SELECT count(*) FROM tombstones WHERE camera_id = :c"),
                               {"c": f.camera_id}).scalar_one() == 0
        for seq in removed:
            key, data_key_id, _ = keys_of[seq]
            with pytest.raises(NotFound):
                store.stat(key)
            dk = session.get(DataKey, data_key_id)
            assert dk is not None and dk.wrapped is None and dk.destroyed_at is not None
        records = session.scalars(select(RetentionRecord).where(
            RetentionRecord.camera_id == f.camera_id).order_by(RetentionRecord.first_seq)).all()
        covered = [s for r in records for s in range(r.first_seq, r.last_seq + 1)]
        assert covered == removed  # each removed seq recorded exactly once
        # The chain stays checkable: the first kept chunk after the stretch links to the
        # record's last chain hash (the hash of the last removed chunk).
        last = records[-1]
        assert bytes(last.last_chain_hash) == keys_of[last.last_seq][2]


def _keys_of(camera_id: int) -> dict[int, tuple[str, int, bytes]]:
    with session_scope() as session:
        return {c.seq: (c.object_key, c.data_key_id, bytes(c.chain_hash))
                for c in session.scalars(select(Chunk).where(Chunk.camera_id == camera_id))}


# --- rules ---------------------------------------------------------------------------


def test_the_most_specific_rule_wins() -> None:
    rules = RuleSet(by_camera={7: Rule(20, "camera c7")},
                    by_region={1: Rule(90, "region 11"), 5: Rule(60, "region 1101")},
                    default=Rule(30, "default"))
    assert governing(rules, camera_id=7, region_path="1/5/") == Rule(20, "camera c7")
    assert governing(rules, camera_id=8, region_path="1/5/9/") == Rule(60, "region 1101")
    assert governing(rules, camera_id=8, region_path="1/6/") == Rule(90, "region 11")
    assert governing(rules, camera_id=8, region_path="2/") == Rule(30, "default")
    assert governing(rules, camera_id=8, region_path=None) == Rule(30, "default")
    assert governing(RuleSet({}, {}, None), camera_id=8, region_path="1/") is None


def test_rules_are_inherited_down_the_region_tree_and_the_floor_holds(
        session: Session) -> None:
    admin = Principal(name=f"admin-{uuid.uuid4().hex[:8]}", role="admin")
    session.add(admin)
    code = uuid.uuid4().hex[:6]
    province = Region(level=RegionLevel.PROVINCE, code=f"P{code}", name="p", path="")
    session.add(province)
    session.flush()
    province.path = f"{province.id}/"
    city = Region(level=RegionLevel.CITY, code=f"C{code}", name="c", parent_id=province.id,
                  path="")
    session.add(city)
    session.flush()
    city.path = f"{province.path}{city.id}/"
    in_city = Camera(name=f"in-city-{code}", source_url="rtsp://127.0.0.1:9/x",
                     region_id=city.id)
    own = Camera(name=f"own-{code}", source_url="rtsp://127.0.0.1:9/y", region_id=city.id)
    session.add_all([in_city, own])
    session.flush()

    def set_(keep: int, **scope: str) -> None:
        retention.set_rule(session=session, scope=retention.Scope(**scope), keep_days=keep,
                           floor_days=15, principal=admin)

    set_(90, region=province.code)
    set_(20, camera=own.name)
    governed = {g.camera: g.rule for g in retention.governed_cameras(session)}
    assert governed[in_city.name] == Rule(90, f"region {province.code}")
    set_(45, region=city.code)  # nearer than the province: wins
    governed = {g.camera: g.rule for g in retention.governed_cameras(session)}
    assert governed[in_city.name] == Rule(45, f"region {city.code}")
    assert governed[own.name] == Rule(20, f"camera {own.name}")
    set_(60, region=city.code)  # changing a rule replaces it
    assert {g.camera: g.rule for g in retention.governed_cameras(session)}[in_city.name] == \
        Rule(60, f"region {city.code}")

    with pytest.raises(InvalidInput, match="below the floor of 15 days"):
        set_(14, camera=own.name)
    with pytest.raises(NotFound, match="does not exist"):
        set_(30, camera="no-such-camera")
    retention.remove_rule(session=session, scope=retention.Scope(region=city.code),
                          principal=admin)
    assert {g.camera: g.rule for g in retention.governed_cameras(session)}[in_city.name] == \
        Rule(90, f"region {province.code}")
    actions = session.scalars(select(AuditEvent.action).where(
        AuditEvent.principal_id == admin.id)).all()
    assert actions.count("retention.rule_set") == 4
    assert actions.count("retention.rule_removed") == 1


def test_stretches_group_consecutive_seqs_per_camera() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def r(camera: int, seq: int) -> policy.Removed:
        return policy.Removed(camera_id=camera, seq=seq, start_at=at + timedelta(seconds=seq),
                              end_at=at + timedelta(seconds=seq + 1), stored_bytes=10,
                              chain_hash=bytes([seq]) * 32, keep_days=30, rule="default")

    runs = policy.stretches([r(1, 5), r(1, 3), r(1, 4), r(1, 8), r(2, 1)])
    assert [(s.camera_id, s.first_seq, s.last_seq, s.chunks, s.stored_bytes) for s in runs] \
        == [(1, 3, 5, 3, 30), (1, 8, 8, 1, 10), (2, 1, 1, 1, 10)]
    assert runs[0].last_chain_hash == bytes([5]) * 32


# --- preview and sweep ---------------------------------------------------------------


def test_the_preview_is_what_the_sweep_then_deletes(settings: Settings,
                                                    footage: Footage) -> None:
    f = footage
    keys_of = _keys_of(f.camera_id)
    with session_scope() as session:
        (before,) = retention.preview(session=session, camera=f.camera)
    assert before.rule is None and before.chunks == 0  # no rule: nothing is deleted
    assert sweep.sweep(settings=settings, camera=f.camera).chunks == 0

    _rule(f.camera)
    with session_scope() as session:
        (shown,) = retention.preview(session=session, camera=f.camera)
        old_rows = session.scalars(select(Chunk).where(
            Chunk.camera_id == f.camera_id, Chunk.seq <= f.old.last_seq)).all()
    assert (shown.rule, shown.keep_days) == (f"camera {f.camera}", KEEP_DAYS)
    assert shown.chunks == len(_old_seqs(f)) == f.old.chunks
    assert shown.stored_bytes == sum(c.stored_bytes for c in old_rows)
    assert (shown.start_at, shown.end_at) == (f.old.start_at, f.old.end_at)

    report = sweep.sweep(settings=settings, camera=f.camera)
    swept = report.cameras[f.camera]
    assert (swept.chunks, swept.stored_bytes, swept.start_at, swept.end_at) == \
        (shown.chunks, shown.stored_bytes, shown.start_at, shown.end_at)
    assert _seqs(f.camera_id) == list(range(f.recent.first_seq, f.recent.last_seq + 1))
    _assert_swept(settings, f, _old_seqs(f), keys_of)
    with session_scope() as session:
        event = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "retention.sweep",
            AuditEvent.target_id == str(report.sweep_id))).one()
        assert event.detail["cameras"][f.camera] == {"chunks": shown.chunks,
                                                     "bytes": shown.stored_bytes}
        (after,) = retention.preview(session=session, camera=f.camera)
    assert after.chunks == 0
    assert sweep.sweep(settings=settings, camera=f.camera).chunks == 0  # nothing left
    with session_scope() as session:  # the timeline says why the footage is gone
        line = timeline(session, camera_id=f.camera_id,
                        window=Span(f.old.start_at, f.recent.start_at))
    assert [g.cause for g in line.gaps] == ["retention"]


CRASH_POINTS = ["_tombstone", "_delete_objects", "_destroy_keys", "_record"]


@pytest.mark.parametrize("step", CRASH_POINTS)
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_sweep_crashed_at_any_step_is_finished_by_the_next(
        settings: Settings, footage: Footage, monkeypatch: pytest.MonkeyPatch,
        step: str, when: str) -> None:
    f = footage
    keys_of = _keys_of(f.camera_id)
    _rule(f.camera)
    real: Callable[..., Any] = getattr(sweep, step)

    class Crash(BaseException):
        pass

    def crashing(*args: Any, **kwargs: Any) -> Any:
        if when == "after":
            real(*args, **kwargs)
        raise Crash(step)

    monkeypatch.setattr(sweep, step, crashing)
    with pytest.raises(Crash):
        sweep.sweep(settings=settings, camera=f.camera)
    monkeypatch.undo()
    # Whatever the crash left, nothing is lost or half-deleted: every old chunk is
    # still whole in the catalog, tombstoned, or recorded as deleted.
    with session_scope() as session:
        tombstoned = set(session.scalars(text(
            "SELECT seq FROM tombstones WHERE camera_id = :c"), {"c": f.camera_id}))
        recorded = {s for r in session.scalars(select(RetentionRecord).where(
            RetentionRecord.camera_id == f.camera_id))
            for s in range(r.first_seq, r.last_seq + 1)}
    assert set(_seqs(f.camera_id)) | tombstoned | recorded >= set(_old_seqs(f))
    assert not tombstoned & recorded

    report = sweep.sweep(settings=settings, camera=f.camera)
    assert report.chunks == len(_old_seqs(f)) - len(recorded)
    assert report.resumed == len(tombstoned)
    _assert_swept(settings, f, _old_seqs(f), keys_of)
    again = sweep.sweep(settings=settings, camera=f.camera)
    assert (again.chunks, again.resumed) == (0, 0)


# --- holds ---------------------------------------------------------------------------


def _case(admin: Principal) -> Case:
    with session_scope() as session:
        case = Case(reference=f"C-{uuid.uuid4().hex[:8]}", title="retention test",
                    created_by=admin.id)
        session.add(case)
        session.flush()
        session.expunge(case)
        return case


def _hold(f: Footage, case: Case, admin: Principal, start: datetime, end: datetime) -> int:
    with session_scope() as session:
        camera = session.get(Camera, f.camera_id)
        assert camera is not None
        hold = retention.place_hold(session=session, case=session.get(Case, case.id),
                                    camera=camera, start_at=start, end_at=end,
                                    reason="suspect vehicle", principal=admin)
        return hold.id


def test_held_chunks_outlive_the_rule_until_the_hold_is_released(
        settings: Settings, footage: Footage) -> None:
    f = footage
    admin = _admin()
    case = _case(admin)
    # A hold over the middle of the old recording keeps the chunks it overlaps.
    middle = f.old.start_at + timedelta(seconds=CHUNK_S + 1)
    hold_id = _hold(f, case, admin, middle, middle + timedelta(seconds=1))
    _rule(f.camera)
    with session_scope() as session:
        (shown,) = retention.preview(session=session, camera=f.camera)
    assert (shown.chunks, shown.held_chunks) == (f.old.chunks - 1, 1)
    report = sweep.sweep(settings=settings, camera=f.camera)
    assert report.chunks == f.old.chunks - 1
    held_seq = f.old.first_seq + 1
    assert held_seq in _seqs(f.camera_id)

    with session_scope() as session:
        retention.release_hold(session=session, hold_id=hold_id, reason="case dropped",
                               principal=admin)
    report = sweep.sweep(settings=settings, camera=f.camera)
    assert report.chunks == 1 and held_seq not in _seqs(f.camera_id)
    with session_scope() as session:
        actions = session.scalars(select(AuditEvent.action).where(
            AuditEvent.target_type == "hold", AuditEvent.target_id == str(hold_id))).all()
        # Three stretches: before the held chunk, after it, and the chunk itself.
        records = session.scalars(select(RetentionRecord).where(
            RetentionRecord.camera_id == f.camera_id).order_by(RetentionRecord.first_seq)
        ).all()
    assert actions == ["hold.placed", "hold.released"]
    assert [(r.first_seq, r.last_seq) for r in records] == [
        (f.old.first_seq, f.old.first_seq), (held_seq, held_seq),
        (held_seq + 1, f.old.last_seq)]


def test_object_lock_refuses_deletion_on_the_embedded_server_and_storage_wins(
        settings: Settings, footage: Footage) -> None:
    f = footage
    store = get_object_store(settings)
    state = worm.probe(store)
    assert state.legal_hold == "enforced", state.detail
    with session_scope() as session:
        worm.record(session=session, state=state)
        assert worm.legal_holds_on(session, settings)

    admin = _admin()
    hold_id = _hold(f, _case(admin), admin, f.old.start_at, f.old.end_at)
    with session_scope() as session:
        hold = session.get(Hold, hold_id)
        assert worm.apply(session=session, store=store, hold=hold) == f.old.chunks
        # Released in the catalog, but the objects' legal holds stay on: as if someone
        # outside Vigil had locked them.
        retention.release_hold(session=session, hold_id=hold_id, reason="test",
                               principal=admin)
    key, *_ = _keys_of(f.camera_id)[f.old.first_seq]
    assert key in store.delete_many([key])  # refused: the object is still there
    assert store.stat(key).size_bytes > 0

    _rule(f.camera)
    rows_before = _rows(f.camera_id)
    report = sweep.sweep(settings=settings, camera=f.camera)
    assert report.chunks == 0 and len(report.refused) == f.old.chunks
    assert _rows(f.camera_id) == rows_before  # the rows are back, every column as it was
    with session_scope() as session:
        refused = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "retention.refused",
            AuditEvent.detail["camera"].astext == f.camera)).all()
        assert len(refused) == f.old.chunks
        hold = session.get(Hold, hold_id)
        assert worm.lift(session=session, store=store, hold=hold) == f.old.chunks
    assert sweep.sweep(settings=settings, camera=f.camera).chunks == f.old.chunks


def test_a_shredded_chunk_cannot_be_read_even_from_a_copy(settings: Settings,
                                                           footage: Footage) -> None:
    f = footage
    store = get_object_store(settings)
    provider = keys.file_key_ring(settings.home_dir)
    key, data_key_id, _ = _keys_of(f.camera_id)[f.old.first_seq]
    copy = store.get(key)  # a copy made before the sweep, outside Vigil's control
    _rule(f.camera)
    sweep.sweep(settings=settings, camera=f.camera)
    with session_scope() as session:
        with pytest.raises(keys.KeyUnavailable, match="destroyed .* unrecoverable"):
            keys.unwrap_data_key(session=session, provider=provider, data_key_id=data_key_id)
    assert copy  # the ciphertext exists, its key does not


# --- the API and the CLI -------------------------------------------------------------


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_api_sets_rules_previews_and_holds_by_role(client: Any, make_token: Any,
                                                       session: Session) -> None:
    from tests import factories

    cam = factories.camera(session)
    admin, auditor = _auth(make_token("admin")), _auth(make_token("auditor"))
    investigator_name = f"inv-{uuid.uuid4().hex[:6]}"
    investigator = _auth(make_token("investigator", name=investigator_name))

    body = {"camera": cam.name, "keep_days": 20}
    assert client.put("/api/v1/retention/rules", json=body, headers=auditor).status_code == 403
    low = client.put("/api/v1/retention/rules", json={**body, "keep_days": 10}, headers=admin)
    assert low.status_code == 422 and "below the floor of 15 days" in low.json()["error"]["message"]
    both = client.put("/api/v1/retention/rules", json={**body, "default": True}, headers=admin)
    assert both.status_code == 422
    rules = client.put("/api/v1/retention/rules", json=body, headers=admin)
    assert rules.status_code == 200
    assert {"scope": f"camera {cam.name}", "keep_days": 20}.items() <= \
        next(r for r in rules.json() if r["scope"] == f"camera {cam.name}").items()
    shown = client.get(f"/api/v1/retention/preview?camera={cam.name}", headers=auditor)
    assert shown.status_code == 200
    assert shown.json()[0] | {"start": None} == {
        "camera": cam.name, "rule": f"camera {cam.name}", "keep_days": 20, "chunks": 0,
        "bytes": 0, "start": None, "end": None, "held_chunks": 0}
    assert client.get("/api/v1/retention/preview", headers=investigator).status_code == 403

    case = client.post("/api/v1/cases", json={"title": "hold test"}, headers=investigator)
    assert case.status_code == 201
    reference = case.json()["reference"]
    hold = client.post(f"/api/v1/cases/{reference}/holds", headers=investigator, json={
        "camera": cam.name, "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
        "reason": "witness statement"})
    assert hold.status_code == 201, hold.text
    hold_id = hold.json()["id"]
    listed = client.get(f"/api/v1/holds?case={reference}", headers=auditor).json()
    assert [h["id"] for h in listed] == [hold_id]
    assert [h["id"] for h in client.get("/api/v1/holds", headers=investigator).json()] \
        == [hold_id]  # an investigator sees the holds of their own cases only
    outsider = _auth(make_token("investigator"))
    assert client.get(f"/api/v1/holds?case={reference}", headers=outsider).json() == []
    release = {"reason": "not needed"}
    assert client.post(f"/api/v1/holds/{hold_id}/release", json=release,
                       headers=investigator).status_code == 403
    released = client.post(f"/api/v1/holds/{hold_id}/release", json=release, headers=admin)
    assert released.status_code == 200 and released.json()["release_reason"] == "not needed"
    assert client.post(f"/api/v1/holds/{hold_id}/release", json=release,
                       headers=admin).status_code == 409
    custody = client.get(f"/api/v1/cases/{reference}/custody", headers=auditor).json()
    assert [e["action"] for e in custody["events"]][-2:] == ["hold_placed", "hold_released"]

    worm_state = client.get("/api/v1/storage/worm", headers=auditor)
    assert worm_state.status_code == 200 and worm_state.json()["object_lock"] == "auto"
    removed = client.post("/api/v1/retention/rules/remove", json={"camera": cam.name},
                          headers=admin)
    assert removed.status_code == 200
    assert not any(r["scope"] == f"camera {cam.name}" for r in removed.json())


def test_an_export_holds_its_footage_until_its_case_closes_and_legal_holds_follow(
        settings: Settings, footage: Footage) -> None:
    from retrieval import cases, exports

    f = footage
    store = get_object_store(settings)
    with session_scope() as session:
        worm.record(session=session, state=worm.probe(store))
    admin = _admin()
    with session_scope() as session:
        principal = session.get(Principal, admin.id)
        case = cases.create_case(session=session, title="export hold", reference=None,
                                 description="", principal=principal)
        reference = case.reference
        exports.request_export(session=session, reference=reference, purpose="court",
                               recipient=None, principal=principal, items=[
                                   exports.ItemRequest(camera=f.camera, start_at=f.old.start_at,
                                                       end_at=f.old.end_at)])
    _rule(f.camera)
    with session_scope() as session:
        (shown,) = retention.preview(session=session, camera=f.camera)
    assert (shown.chunks, shown.held_chunks) == (0, f.old.chunks)
    counts = worm.sync_legal_holds(settings=settings, store=store)
    assert counts["locked_objects"] >= f.old.chunks
    assert sweep.sweep(settings=settings, camera=f.camera).chunks == 0

    with session_scope() as session:
        cases.close_case(session=session, reference=reference,
                         principal=session.get(Principal, admin.id), reason="trial over")
    # Released, but the legal holds are still on: the sweep leaves the footage alone
    # until they are lifted, rather than run into the store's refusal.
    with session_scope() as session:
        (shown,) = retention.preview(session=session, camera=f.camera)
    assert shown.chunks == 0
    assert worm.sync_legal_holds(settings=settings, store=store)["lifted_objects"] >= \
        f.old.chunks
    report = sweep.sweep(settings=settings, camera=f.camera)
    assert (report.chunks, report.refused) == (f.old.chunks, [])


def test_an_export_after_a_swept_stretch_links_through_its_retention_record(
        settings: Settings, footage: Footage, tmp_path: Path) -> None:
    from retrieval import cases, exports, verify

    f = footage
    _rule(f.camera)
    sweep.sweep(settings=settings, camera=f.camera)
    admin = _admin()
    with session_scope() as session:
        principal = session.get(Principal, admin.id)
        case = cases.create_case(session=session, title="after retention", reference=None,
                                 description="", principal=principal)
        export = exports.request_export(
            session=session, reference=case.reference, purpose="court", recipient=None,
            principal=principal, items=[exports.ItemRequest(
                camera=f.camera, start_at=f.recent.start_at, end_at=f.recent.end_at)])
        export_id = export.id
    assert exports.run_export(settings=settings, export_id=export_id, owner="test") == \
        "succeeded"
    with session_scope() as session:
        row = session.get(exports.Export, export_id)
        assert row is not None
        package = exports.download_package(session=session, settings=settings, export=row,
                                           case=session.get(Case, row.case_id),
                                           principal=session.get(Principal, admin.id),
                                           dst=tmp_path / "p.zip", via="test")
    report = verify.verify_package(package)
    assert report.ok, verify.render(report)


def test_an_admin_does_it_all_from_the_cli(settings: Settings, footage: Footage) -> None:
    from typer.testing import CliRunner

    from ops.cli import app

    f = footage
    admin = _admin()
    case = _case(admin)
    cli = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = cli.invoke(app, list(args))
        if code == 2:  # `vigil` (ops.cli.main) turns a VigilError into exit status 2
            assert isinstance(result.exception, VigilError), result.output
            return str(result.exception)
        assert result.exit_code == code, result.output
        return result.output

    assert "below the floor of 15 days" in run("retention", "set", "14", "--camera", f.camera,
                                               "--as", admin.name, code=2)
    run("retention", "set", str(KEEP_DAYS), "--camera", f.camera, "--as", admin.name)
    assert f"camera {f.camera}" in run("retention", "list")
    middle = f.old.start_at + timedelta(seconds=CHUNK_S + 1)
    assert "placed" in run("hold", "place", case.reference, "--camera", f.camera,
                           "--from", middle.isoformat(),
                           "--to", (middle + timedelta(seconds=1)).isoformat(),
                           "--reason", "witness", "--as", admin.name)
    with session_scope() as session:
        (shown,) = retention.preview(session=session, camera=f.camera)
    assert (shown.chunks, shown.held_chunks) == (f.old.chunks - 1, 1)
    assert "ret-" in run("retention", "preview", "--camera", f.camera)  # (rich wraps names)
    assert f"deleted {f.old.chunks - 1} chunk(s)" in run("retention", "sweep", "--camera",
                                                          f.camera)
    (hold,) = [h for h in run("hold", "list", "--case", case.reference).splitlines()
               if f.camera[:8] in h]
    hold_id = hold.split()[1] if hold.split()[0] in "│┃|" else hold.split()[0]
    run("hold", "release", hold_id.strip("│┃|"), "--reason", "done", "--as", admin.name)
    assert "deleted 1 chunk(s)" in run("retention", "sweep", "--camera", f.camera)
    assert "S3 legal holds: enforced" in run("storage", "probe")


def test_one_sweep_at_a_time(settings: Settings, engine: Any) -> None:
    with engine.connect() as other:
        assert other.execute(text("SELECT pg_try_advisory_lock(:k)"),
                             {"k": sweep.SWEEP_LOCK}).scalar_one()
        try:
            with pytest.raises(sweep.SweepBusy, match="another sweep is running"):
                sweep.sweep(settings=settings)
            # The scheduled task leaves the running sweep alone rather than fail.
            from retention import tasks

            assert tasks.sweep_task() == {"skipped": "another sweep is running"}
        finally:
            other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": sweep.SWEEP_LOCK})
            other.commit()


def test_the_scheduled_worm_probe_records_what_the_store_enforces(settings: Settings,
                                                                  engine: Any) -> None:
    from retention import tasks

    assert tasks.worm_probe_task()["legal_hold"] == "enforced"
    with session_scope() as session:
        state = worm.latest(session)
    assert state is not None and state.legal_hold == "enforced"


def test_a_rule_below_a_raised_floor_deletes_only_down_to_the_floor(
        settings: Settings, footage: Footage) -> None:
    f = footage
    _rule(f.camera, keep_days=30)
    raised = settings.model_copy(update={"retention_floor_days": 50})  # 40-day-old footage
    with session_scope() as session:
        (shown,) = retention.preview(session=session, camera=f.camera, floor_days=50)
    assert shown.chunks == 0
    assert sweep.sweep(settings=raised, camera=f.camera).chunks == 0
    assert sweep.sweep(settings=settings, camera=f.camera).chunks == f.old.chunks
