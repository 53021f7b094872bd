"""Exports end to end on real servers: request, build, download, verify; failures.

Footage is imported through the recorder's own import path (sealed chunks in the
real S3 server, chained, checkpointed), then exported by the same code a worker
runs. The worker-crash test runs real `vigil worker` processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from recorder import importer, service
from retrieval import approval, cases, exports, verify
from tests.media import encode
from tests.support import VIGIL
from vigil import custody
from vigil.auth import service as auth_service
from vigil.catalog.models import (
    ApprovalState,
    AuditEvent,
    Case,
    Chunk,
    Export,
    ExportStatus,
    Principal,
)
from vigil.db import session_scope
from vigil.errors import Conflict
from vigil.objectstore import get_object_store
from vigil.settings import Settings

START = datetime(2025, 6, 1, 12, 0, 0, 500_000, tzinfo=UTC)
GAP_S = 8  # between the two imported recordings


@dataclass(frozen=True)
class Footage:
    camera: str
    camera_id: int
    first: tuple[datetime, datetime]  # [start, end) of the first recording
    second: tuple[datetime, datetime]


def _camera(chunk_seconds: int = 4) -> str:
    name = f"exp-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        service.add_camera(session=session, name=name, url="rtsp://127.0.0.1:9/none",
                           chunk_seconds=chunk_seconds, actor="test")
    return name


def _import(settings: Settings, path: Path, camera: str, start: datetime
            ) -> importer.ImportResult:
    return importer.import_file(settings=settings, path=path, camera_name=camera,
                                start_at=start, actor="test")


@pytest.fixture(scope="module")
def footage(settings: Settings, engine, tmp_path_factory: pytest.TempPathFactory) -> Footage:
    """Two recordings of one camera, 12 s and 6 s, with a gap of GAP_S between."""
    work = tmp_path_factory.mktemp("footage")
    camera = _camera()
    a = _import(settings, encode(work / "a.mp4", seconds=12, gop=25), camera, START)
    b = _import(settings, encode(work / "b.mp4", seconds=6, gop=25), camera,
                a.end_at + timedelta(seconds=GAP_S))
    return Footage(camera=camera, camera_id=a.camera_id, first=(a.start_at, a.end_at),
                   second=(b.start_at, b.end_at))


def _investigator(name: str | None = None) -> tuple[str, str]:
    """(principal name, token) of a fresh investigator, committed."""
    name = name or f"ivy-{uuid.uuid4().hex[:6]}"
    with session_scope() as session:
        issued = auth_service.issue_token(session=session, principal_name=name,
                                          role="investigator", label="test", actor="test")
    return name, issued.token


def _principal(name: str) -> Principal:
    with session_scope() as session:
        principal = session.scalars(select(Principal).where(Principal.name == name)).one()
        session.expunge(principal)
    return principal


def _case(investigator: str) -> str:
    with session_scope() as session:
        case = cases.create_case(session=session, title="Burglary, 3 Elm St",
                                 principal=session.merge(_principal(investigator)))
        return case.reference


def _request(reference: str, investigator: str, items: list[exports.ItemRequest],
             recipient: str | None = None) -> uuid.UUID:
    with session_scope() as session:
        export = exports.request_export(session=session, reference=reference, items=items,
                                        purpose="court", recipient=recipient,
                                        principal=session.merge(_principal(investigator)))
        return export.id


def _download(settings: Settings, export_id: uuid.UUID, investigator: str, dst: Path) -> Path:
    with session_scope() as session:
        principal = session.merge(_principal(investigator))
        export, case = exports.get_export(session=session, export_id=export_id,
                                          principal=principal)
        return exports.download_package(session=session, settings=settings, export=export,
                                        case=case, principal=principal, dst=dst, via="test")


def _export_row(export_id: uuid.UUID) -> Export:
    with session_scope() as session:
        row = session.get(Export, export_id)
        assert row is not None
        session.expunge(row)
    return row


def _evidence(package: Path) -> dict:
    with zipfile.ZipFile(package) as z:
        name = next(n for n in z.namelist() if n.endswith("/evidence.json"))
        return json.loads(z.read(name))


# --- the whole path -------------------------------------------------------------------


def test_an_export_across_chunks_and_a_gap_builds_a_package_that_verifies(
        settings: Settings, footage: Footage, tmp_path: Path) -> None:
    investigator, _ = _investigator()
    reference = _case(investigator)
    t0 = footage.first[0] + timedelta(seconds=1, milliseconds=130)  # mid-GOP, mid-frame
    t1 = footage.second[0] + timedelta(seconds=2, milliseconds=70)
    export_id = _request(reference, investigator,
                         [exports.ItemRequest(footage.camera, t0, t1)], recipient="Court 4")

    assert exports.run_export(settings=settings, export_id=export_id, owner="t") == "succeeded"
    # A second delivery of the task finds nothing to do.
    assert exports.run_export(settings=settings, export_id=export_id, owner="u") == "done"
    row = _export_row(export_id)
    assert row.status == ExportStatus.SUCCEEDED and row.progress_pct == 100
    assert row.package_key is not None and row.package_key.startswith("exports/")

    package = _download(settings, export_id, investigator, tmp_path / "p.zip")
    assert hashlib.sha256(package.read_bytes()).digest() == row.package_sha256
    report = verify.verify_package(package)
    assert report.ok, verify.render(report)

    evidence = _evidence(package)
    (item,) = evidence["items"]
    assert item["camera"]["name"] == footage.camera
    seqs = [c["seq"] for c in item["chunks"]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # Chunks of both recordings: the range starts in the first and ends in the second.
    assert item["chunks"][0]["start_us"] <= item["from_us"] < item["chunks"][0]["end_us"]
    assert item["chunks"][-1]["start_us"] < item["to_us"] <= item["chunks"][-1]["end_us"]
    (gap,) = item["gaps"]
    assert (gap["start_us"], gap["end_us"]) == (
        int(footage.first[1].timestamp() * 1e6), int(footage.second[0].timestamp() * 1e6))
    assert item["checkpoint"]["seq"] >= seqs[-1]
    assert item["watermarked"]["transformation"]["tool"] == "ffmpeg"
    assert evidence["export"]["recipient"] == "Court 4"
    # Frame accuracy: the first frame at or after t0, the last before t1 (25 fps).
    assert 0 <= item["clip"]["first_frame_us"] - item["from_us"] < 40_000
    assert 0 < item["to_us"] - item["clip"]["last_frame_us"] <= 40_000
    with zipfile.ZipFile(package) as z:
        names = z.namelist()
    assert any(n.endswith("/clip-watermarked.mp4") for n in names)
    assert sum(1 for n in names if "/originals/" in n) == len(seqs)

    # The custody record: request, packaging, download, each linked to the one before.
    with session_scope() as session:
        case = cases.get_case(session=session, reference=reference,
                              principal=session.merge(_principal(investigator)))
        log = cases.custody_log(session=session, case=case)
    assert [e.action for e, _ in log] == ["case_opened", "export_requested",
                                          "export_packaged", "package_downloaded"]
    assert custody.verify_events(log) == 4
    with zipfile.ZipFile(package) as z:
        lines = z.read(next(n for n in names if n.endswith("/custody.jsonl"))).decode()
    assert [json.loads(line)["action"] for line in lines.splitlines()] == [
        "case_opened", "export_requested", "export_packaged"]


def test_a_sensitive_cameras_package_is_built_but_released_only_once_approved(
        settings: Settings, footage: Footage, tmp_path: Path) -> None:
    """docs/design/access.md A6: the download waits for a second person."""
    investigator, _ = _investigator()
    reference = _case(investigator)
    with session_scope() as session:
        service.set_sensitive(session=session, name=footage.camera, sensitive=True,
                              actor="test")
    try:
        export_id = _request(reference, investigator, [exports.ItemRequest(
            footage.camera, footage.first[0], footage.first[0] + timedelta(seconds=4))])
    finally:
        with session_scope() as session:
            service.set_sensitive(session=session, name=footage.camera, sensitive=False,
                                  actor="test")
    row = _export_row(export_id)
    assert row.approval == ApprovalState.PENDING
    assert row.approval_reason is not None and "sensitive" in row.approval_reason
    assert exports.run_export(settings=settings, export_id=export_id, owner="t") == "succeeded"
    with pytest.raises(Conflict, match="awaits a second person's approval"):
        _download(settings, export_id, investigator, tmp_path / "early.zip")
    assert not (tmp_path / "early.zip").exists()
    approver, _ = _investigator(f"boss-{uuid.uuid4().hex[:6]}")
    with session_scope() as session:
        boss = session.merge(_principal(approver))
        boss.role = "admin"
        export, case = exports.get_export(session=session, export_id=export_id, principal=boss)
        approval.decide(session=session, export=export, case=case, principal=boss,
                        approve=True, note="proportionate to the offence")
    package = _download(settings, export_id, investigator, tmp_path / "p.zip")
    assert hashlib.sha256(package.read_bytes()).digest() == _export_row(export_id).package_sha256
    # The package's own custody record was sealed before the approval; the case's
    # record carries it.
    with session_scope() as session:
        case = session.scalars(select(Case).where(Case.reference == reference)).one()
        actions = [e.action for e, _ in cases.custody_log(session=session, case=case)]
    assert actions.index("export_approved") < actions.index("package_downloaded")


def test_a_tampered_chunk_fails_the_export_with_a_named_error_and_an_audit_event(
        settings: Settings, engine, tmp_path: Path) -> None:
    camera = _camera(chunk_seconds=2)
    result = _import(settings, encode(tmp_path / "t.mp4", seconds=6, gop=25, audio=False),
                     camera, START)
    with session_scope() as session:
        victim = session.scalars(select(Chunk).where(Chunk.camera_id == result.camera_id)
                                 .order_by(Chunk.seq).offset(1).limit(1)).one()
        key, seq = victim.object_key, victim.seq
    store = get_object_store(settings)
    blob = bytearray(store.get(key))
    blob[len(blob) // 2] ^= 0x01
    store.put(key, bytes(blob))

    investigator, _ = _investigator()
    reference = _case(investigator)
    export_id = _request(reference, investigator, [exports.ItemRequest(
        camera, result.start_at, result.end_at)])
    assert exports.run_export(settings=settings, export_id=export_id, owner="t") == "failed"

    row = _export_row(export_id)
    assert row.status == ExportStatus.FAILED and row.package_key is None
    assert row.error is not None and row.error.startswith("chunk_tampered:")
    assert f"chunk {seq}" in row.error
    with session_scope() as session:
        events = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "export.integrity_failure",
            AuditEvent.target_id == str(export_id))).all()
        assert len(events) == 1 and events[0].detail["error"] == "chunk_tampered"
        case = cases.get_case(session=session, reference=reference,
                              principal=session.merge(_principal(investigator)))
        actions = [e.action for e, _ in cases.custody_log(session=session, case=case)]
    assert actions[-1] == "export_failed"
    assert not list(store.list(f"exports/{export_id}"))


def test_export_requests_are_checked(settings: Settings, footage: Footage) -> None:
    from vigil.errors import InvalidInput, NotFound

    investigator, _ = _investigator()
    outsider, _ = _investigator()
    reference = _case(investigator)
    t0, t1 = footage.first
    cases_of = [
        (investigator, [exports.ItemRequest(footage.camera, t1, t0)], InvalidInput),
        (investigator, [exports.ItemRequest(footage.camera, t0, t0 + timedelta(days=2))],
         InvalidInput),
        (investigator, [exports.ItemRequest("no-such-camera", t0, t1)], NotFound),
        # Nothing recorded there: refused at once, not after queueing.
        (investigator, [exports.ItemRequest(footage.camera, t0 - timedelta(hours=2),
                                            t0 - timedelta(hours=1))], InvalidInput),
        (investigator, [exports.ItemRequest(footage.camera, t0, t1),
                        exports.ItemRequest(footage.camera, t1, t1 + timedelta(seconds=5))],
         InvalidInput),  # one range per camera
        (investigator, [exports.ItemRequest(footage.camera, t0,
                                            datetime.now(UTC) + timedelta(hours=1))],
         InvalidInput),  # ends in the future
        # Someone outside the case does not learn that it exists.
        (outsider, [exports.ItemRequest(footage.camera, t0, t1)], NotFound),
    ]
    for who, items, error in cases_of:
        with pytest.raises(error):
            _request(reference, who, items)
    # A watermarked copy of more footage than the task's time limit allows.
    with pytest.raises(InvalidInput, match="at most 1.5 h"):
        _request(reference, investigator, [exports.ItemRequest(
            footage.camera, t0 - timedelta(hours=2), t1)], recipient="Court")


def test_a_missing_chunk_and_exhausted_attempts_fail_the_export_with_named_errors(
        settings: Settings, footage: Footage, engine, tmp_path: Path) -> None:
    from sqlalchemy import text as sql

    from vigil.db import get_engine

    camera = _camera(chunk_seconds=2)
    result = _import(settings, encode(tmp_path / "m.mp4", seconds=4, gop=25, audio=False),
                     camera, START)
    with session_scope() as session:
        key = session.scalars(select(Chunk.object_key).where(
            Chunk.camera_id == result.camera_id).order_by(Chunk.seq).limit(1)).one()
    get_object_store(settings).delete(key)
    investigator, _ = _investigator()
    export_id = _request(_case(investigator), investigator, [exports.ItemRequest(
        camera, result.start_at, result.end_at)])
    assert exports.run_export(settings=settings, export_id=export_id, owner="t") == "failed"
    row = _export_row(export_id)
    assert row.error is not None and row.error.startswith("chunk_missing:")

    # An export whose attempts all died is failed, not sent to workers forever.
    export_id = _request(_case(investigator), investigator, [exports.ItemRequest(
        footage.camera, footage.first[0], footage.first[1])])
    with get_engine().begin() as conn:
        conn.execute(sql("UPDATE exports SET status = 'running', attempts = :n, "
                         "lease_expires_at = now() - interval '1 s' WHERE id = :id"),
                     {"id": export_id, "n": exports.MAX_ATTEMPTS})
    assert exports.run_export(settings=settings, export_id=export_id, owner="t") == "failed"
    row = _export_row(export_id)
    assert row.status == ExportStatus.FAILED and row.error is not None
    assert row.error.startswith("export_abandoned:")
    with session_scope() as session:
        case = session.get(cases.Case, row.case_id)
        assert case is not None
        actions = [e.action for e, _ in cases.custody_log(session=session, case=case)]
    assert actions[-1] == "export_failed"


# --- the API ------------------------------------------------------------------------


@pytest.fixture
def api(settings: Settings, engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The app with real, committing sessions; exports are built in this process
    (as the worker would) instead of through the broker."""
    from fastapi.testclient import TestClient

    from retrieval.app import create_app

    monkeypatch.setattr(exports, "enqueue", lambda export_id: exports.run_export(
        settings=settings, export_id=export_id, owner="api-test"))
    with TestClient(create_app(), base_url="http://127.0.0.1") as client:
        yield client


def _auditor_token() -> str:
    with session_scope() as session:
        return auth_service.issue_token(
            session=session, principal_name=f"aud-{uuid.uuid4().hex[:6]}", role="auditor",
            label="test", actor="test").token


def test_the_api_opens_a_case_exports_downloads_with_ranges_and_verifies(
        api, footage: Footage, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, token = _investigator()
    auth = {"Authorization": f"Bearer {token}"}
    auditor = {"Authorization": f"Bearer {_auditor_token()}"}

    r = api.get(f"/api/v1/cameras/{footage.camera}/timeline", headers=auth, params={
        "from": (footage.first[0] - timedelta(seconds=5)).isoformat(),
        "to": footage.second[1].isoformat()})
    assert r.status_code == 200, r.text
    line = r.json()
    assert len(line["recorded"]) == 2 and len(line["gaps"]) == 2  # before, and between

    # A preview to watch before exporting: a frame-accurate MP4 a player can seek in.
    window = {"from": (footage.first[0] + timedelta(seconds=2)).isoformat(),
              "to": (footage.first[0] + timedelta(seconds=7, milliseconds=500)).isoformat()}
    clip = api.get(f"/api/v1/cameras/{footage.camera}/clip", headers=auth, params=window)
    assert clip.status_code == 200, clip.text
    assert clip.headers["content-type"] == "video/mp4"
    assert clip.headers["accept-ranges"] == "bytes"
    assert clip.content[4:8] == b"ftyp"
    part = api.get(f"/api/v1/cameras/{footage.camera}/clip", params=window,
                   headers={**auth, "Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == clip.content[:100]
    preview = tmp_path / "preview.mp4"
    preview.write_bytes(clip.content)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0",
                            str(preview)], capture_output=True, text=True, check=True)
    assert int(probe.stdout.strip()) == round(5.5 * 25)  # 25 fps, [2 s, 7.5 s)
    assert api.get(f"/api/v1/cameras/{footage.camera}/clip", headers=auditor,
                   params=window).status_code == 403

    r = api.post("/api/v1/cases", headers=auth, json={"title": "Robbery at the depot"})
    assert r.status_code == 201, r.text
    reference = r.json()["reference"]
    body = {"purpose": "prosecution", "recipient": "Defence counsel",
            "items": [{"camera": footage.camera, "from": footage.first[0].isoformat(),
                       "to": (footage.first[0] + timedelta(seconds=5)).isoformat()}]}
    assert api.post(f"/api/v1/cases/{reference}/exports", headers=auditor,
                    json=body).status_code == 403
    r = api.post(f"/api/v1/cases/{reference}/exports", headers=auth, json=body)
    assert r.status_code == 202, r.text
    export_id = r.json()["id"]

    r = api.get(f"/api/v1/exports/{export_id}", headers=auth)
    assert r.json()["status"] == "succeeded" and r.json()["progress_pct"] == 100
    sha = r.json()["package_sha256"]

    r = api.get(f"/api/v1/exports/{export_id}/package", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert hashlib.sha256(r.content).hexdigest() == sha
    ranged = api.get(f"/api/v1/exports/{export_id}/package",
                     headers={**auth, "Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == r.content[100:200]
    assert api.get(f"/api/v1/exports/{export_id}/package", headers=auditor).status_code == 403

    r2 = api.get(f"/api/v1/cases/{reference}/custody", headers=auditor)
    assert r2.status_code == 200 and r2.json()["verified"] is True
    # The full download is recorded; the range request continues it and is not.
    assert [e["action"] for e in r2.json()["events"]].count("package_downloaded") == 1

    # Auditors verify through the API: the genuine package, then a tampered one.
    ok = api.post("/api/v1/verify", headers={**auditor, "Content-Type": "application/zip"},
                  content=r.content)
    assert ok.status_code == 200 and ok.json()["ok"] is True, ok.text
    package = tmp_path / "p.zip"
    package.write_bytes(r.content)
    tampered = _rezip_with(package, "custody.jsonl", lambda b: b.replace(b"court", b"COURT")
                           if b"court" in b else b + b" ")
    bad = api.post("/api/v1/verify", headers={**auditor, "Content-Type": "application/zip"},
                   content=tampered.read_bytes())
    assert bad.status_code == 200 and bad.json()["ok"] is False
    assert any(f["file"].endswith("custody.jsonl") for f in bad.json()["failures"])

    # Oversized and malformed uploads are refused with a clear error.
    monkeypatch.setattr(settings, "verify_upload_max_mb", 0)
    big = api.post("/api/v1/verify", headers={**auditor, "Content-Type": "application/zip"},
                   content=b"x" * 1000)
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    monkeypatch.setattr(settings, "verify_upload_max_mb", 1)
    junk = api.post("/api/v1/verify", headers={**auditor, "Content-Type": "application/zip"},
                    content=b"not a zip")
    assert junk.status_code == 200 and junk.json()["ok"] is False


def _rezip_with(package: Path, suffix: str, change) -> Path:  # noqa: ANN001
    out = package.with_name("tampered.zip")
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, change(data) if info.filename.endswith(suffix) else data)
    return out


# --- a worker killed mid-export ------------------------------------------------------


@pytest.mark.slow
def test_an_export_survives_its_worker_being_killed(settings: Settings, engine,
                                                    tmp_path: Path) -> None:
    camera = _camera(chunk_seconds=5)
    result = _import(settings, encode(tmp_path / "long.mp4", seconds=40, gop=25,
                                      size="640x360"), camera, START)
    investigator, _ = _investigator()
    reference = _case(investigator)
    export_id = _request(reference, investigator, [exports.ItemRequest(
        camera, result.start_at, result.end_at)], recipient="Court 1")

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([*VIGIL, "worker", "--concurrency", "1"], env=dict(os.environ),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    first = worker()
    second: subprocess.Popen[bytes] | None = None
    try:
        from vigil.tasks import configure

        configure(settings)
        exports.enqueue(export_id)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row = _export_row(export_id)
            if row.status == ExportStatus.RUNNING and row.stage in ("stitching", "watermarking"):
                break
            assert row.status != ExportStatus.SUCCEEDED, "finished before it could be killed"
            time.sleep(0.1)
        else:
            raise AssertionError(f"the export never got going: {row.stage}")
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool, mid-export
        first.wait(timeout=30)
        killed_at_stage = row.stage

        second = worker()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            row = _export_row(export_id)
            if row.status in (ExportStatus.SUCCEEDED, ExportStatus.FAILED):
                break
            time.sleep(0.5)
        assert row.status == ExportStatus.SUCCEEDED, (row.status, row.error, killed_at_stage)
        assert row.attempts >= 2
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    package = _download(settings, export_id, investigator, tmp_path / "p.zip")
    report = verify.verify_package(package)
    assert report.ok, verify.render(report)


def test_an_outage_gives_the_export_up_with_a_hold_and_resume_sends_it_again(
        settings: Settings, footage: Footage, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import text as sql

    from vigil.db import get_engine
    from vigil.errors import StorageError

    investigator, _ = _investigator()
    export_id = _request(_case(investigator), investigator, [exports.ItemRequest(
        footage.camera, footage.first[0], footage.first[1])])

    def unreachable(*_args: object, **_kwargs: object) -> bytes:
        raise StorageError("reading chunks/...: object store unreachable")

    with monkeypatch.context() as m:
        m.setattr(exports, "read_plaintext", unreachable)
        with pytest.raises(StorageError):
            exports.run_export(settings=settings, export_id=export_id, owner="t")
    row = _export_row(export_id)
    assert row.status == ExportStatus.RUNNING and row.lease_owner is None
    assert row.lease_expires_at is not None and row.lease_expires_at > datetime.now(UTC)
    # Held: neither resumed nor claimable yet, so an outage is not hammered.
    assert export_id not in exports.stalled_exports(get_engine())
    assert exports.run_export(settings=settings, export_id=export_id, owner="u") == "busy"

    with get_engine().begin() as conn:  # the hold passes
        conn.execute(sql("UPDATE exports SET lease_expires_at = now() - interval '1 s' "
                         "WHERE id = :id"), {"id": export_id})
    assert export_id in exports.stalled_exports(get_engine())
    assert exports.run_export(settings=settings, export_id=export_id, owner="v") == "succeeded"
    assert _export_row(export_id).attempts == 2


def test_case_references_titles_and_reasons_are_checked(settings: Settings, engine) -> None:
    from vigil.errors import Conflict, InvalidInput

    investigator, _ = _investigator()
    reference = f"CASE-{uuid.uuid4().hex[:6]}"
    with session_scope() as session:
        cases.create_case(session=session, title="Arson", reference=reference,
                          principal=session.merge(_principal(investigator)))
    for ref, title, error in [(reference, "Again", Conflict), ("2026/17", "Slash", InvalidInput),
                              ("../x", "Dots", InvalidInput), (None, "nul\x00", InvalidInput),
                              (None, "   ", InvalidInput)]:
        with pytest.raises(error), session_scope() as session:
            cases.create_case(session=session, title=title, reference=ref,
                              principal=session.merge(_principal(investigator)))
    with pytest.raises(InvalidInput), session_scope() as session:
        cases.close_case(session=session, reference=reference, reason="\x00",
                         principal=session.merge(_principal(investigator)))
