"""The integrity scrub on real servers: real sealed chunks (imported through the recorder's
own import path), tampered, removed or altered in S3 and the catalog, then scrubbed.

Each test imports footage of a camera of its own, and scrubs only that camera: the
catalog is shared with the rest of the suite, whose tests tamper with their own chunks.
An object-store outage is what a client sees once the server has stopped: nothing
listening at its address. (Stopping a second stack's S3 server, as
tests/test_recorder_faults.py does, costs a whole stack and makes no difference the
scrub can see.)
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from recorder import importer, service
from retention import scrub as scrub_service
from retention.scrub import Check, Selection
from tests import factories
from tests.media import encode
from tests.support import VIGIL, free_ports
from vigil import crypto, keys
from vigil.catalog.models import AuditEvent, Chunk, DataKey
from vigil.chunks import read_plaintext, to_us
from vigil.db import session_scope
from vigil.errors import InvalidInput
from vigil.objectstore import get_object_store
from vigil.settings import Settings

START = datetime(2025, 9, 1, 10, 0, 0, tzinfo=UTC)
CHUNKS = 5  # a 10 s clip with a keyframe every second, cut into 2 s chunks


@dataclass(frozen=True)
class Footage:
    camera: str
    camera_id: int
    chunks: list[Chunk]  # in seq order


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode(tmp_path_factory.mktemp("scrub") / "clip.mp4", seconds=10, gop=25,
                  audio=False)


def _footage(settings: Settings, clip: Path) -> Footage:
    name = f"scrub-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        service.add_camera(session=session, name=name, url="rtsp://127.0.0.1:9/none",
                           chunk_seconds=2, actor="test")
    result = importer.import_file(settings=settings, path=clip, camera_name=name,
                                  start_at=START, actor="test")
    with session_scope() as session:
        chunks = list(session.scalars(select(Chunk).where(
            Chunk.camera_id == result.camera_id).order_by(Chunk.seq)))
    assert [c.seq for c in chunks] == list(range(CHUNKS))
    return Footage(camera=name, camera_id=result.camera_id, chunks=chunks)


@pytest.fixture(scope="module")
def clean(settings: Settings, engine, clip: Path) -> Footage:
    """Footage no test alters."""
    return _footage(settings, clip)


@pytest.fixture
def footage(settings: Settings, engine, clip: Path) -> Footage:
    """Footage this test may tamper with."""
    return _footage(settings, clip)


def _events(action: str, run_id: str) -> list[AuditEvent]:
    with session_scope() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                 .order_by(AuditEvent.id))
        return [e for e in events if e.detail.get("scrub") == run_id]


def _found(report: scrub_service.ScrubReport) -> set[tuple[int, str]]:
    return {(m.chunk.seq, m.check.value) for m in report.mismatches}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIGIL, "scrub", *args], env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=300)


def _dead_s3_env(settings: Settings) -> dict[str, str]:
    """The object store as a client sees it once its server has stopped: nothing
    listens at its address."""
    secrets = settings.embedded_secrets()
    (port,) = free_ports(1)
    return {"VIGIL_S3_ENDPOINT": f"http://127.0.0.1:{port}",
            "VIGIL_S3_ACCESS_KEY": secrets.s3_access_key.get_secret_value(),
            "VIGIL_S3_SECRET_KEY": secrets.s3_secret_key.get_secret_value()}


def _dead_s3_settings(settings: Settings) -> Settings:
    env = _dead_s3_env(settings)
    return settings.model_copy(update={
        "s3_endpoint": env["VIGIL_S3_ENDPOINT"],
        "s3_access_key": SecretStr(env["VIGIL_S3_ACCESS_KEY"]),
        "s3_secret_key": SecretStr(env["VIGIL_S3_SECRET_KEY"])})


# --- a clean store ---------------------------------------------------------------------


def test_a_clean_scrub_finds_nothing(settings: Settings, clean: Footage) -> None:
    progress: list[tuple[int, int | None]] = []
    report = scrub_service.scrub(settings=settings, camera=clean.camera,
                                 on_progress=lambda *p: progress.append(p))

    assert report.complete and report.stopped_by is None
    assert report.checked == CHUNKS and report.mismatch_count == 0
    assert report.mismatches == [] and report.notes == []
    assert report.chain_unchecked == 0 and report.removed == 0
    assert report.bytes_read == sum(c.stored_bytes for c in clean.chunks)
    assert progress == [(n, CHUNKS) for n in range(1, CHUNKS + 1)]
    assert _events("scrub.mismatch", report.run_id) == []
    (done,) = _events("scrub.completed", report.run_id)
    assert done.actor == "system" and done.target_id == report.run_id
    assert done.detail["checked"] == CHUNKS and done.detail["mismatches"] == 0
    assert done.detail["complete"] is True and done.detail["camera"] == clean.camera
    assert not list((settings.home_dir / "work" / "scrub").iterdir())  # no plaintext left


def test_a_limit_and_a_sample_check_a_subset(settings: Settings, clean: Footage) -> None:
    assert scrub_service.scrub(settings=settings, camera=clean.camera, limit=2).checked == 2
    every = scrub_service.scrub(settings=settings, camera=clean.camera, sample=1.0)
    assert every.checked == CHUNKS
    sampled = [scrub_service.scrub(settings=settings, camera=clean.camera, sample=0.5).checked
               for _ in range(4)]
    assert all(0 <= n <= CHUNKS for n in sampled)
    with pytest.raises(InvalidInput):
        scrub_service.scrub(settings=settings, camera=clean.camera, sample=0.0)

    out_of_time = scrub_service.scrub(settings=settings, camera=clean.camera,
                                      time_budget_s=0.0)
    assert out_of_time.checked == 0 and "time budget" in (out_of_time.stopped_by or "")
    assert len(_events("scrub.stopped", out_of_time.run_id)) == 1


def test_the_daily_scrub_checks_the_configured_fraction(settings: Settings, engine) -> None:
    with pytest.raises(ValidationError):
        Settings(scrub_sample=0)
    with pytest.raises(ValidationError):
        Settings(scrub_sample=1.5)
    # A fraction so small that no chunk of the shared catalog is read.
    summary = scrub_service.scheduled_scrub(
        settings=settings.model_copy(update={"scrub_sample": 1e-12}))
    assert summary["sample"] == 1e-12 and summary["complete"] is True
    assert summary["camera"] is None and summary["checked"] == 0
    assert len(_events("scrub.completed", summary["scrub"])) == 1


def test_the_sample_is_chosen_in_the_database_stable_per_seed(session: Session) -> None:
    """400 catalog rows (rolled back): a quarter is a quarter, give or take; the same seed
    selects the same rows whatever the page size; another seed other rows."""
    cam, kek = factories.camera(session), factories.kek(session)
    for seq in range(400):
        factories.chunk(session, cam=cam, key=kek, seq=seq,
                        start_at=START + timedelta(minutes=seq))

    def ids(sample: float | None, seed: str, page: int = 1000) -> list[int]:
        found: list[int] = []
        after = None
        while rows := scrub_service.sample_page(session, Selection(sample, seed, cam.id),
                                                after=after, size=page):
            found += [c.id for c, name in rows if name == cam.name]
            after = (rows[-1][0].camera_id, rows[-1][0].seq)
        return found

    quarter = ids(0.25, "a")
    assert 60 <= len(quarter) <= 140  # mean 100, standard deviation 8.7
    assert ids(0.25, "a", page=7) == quarter
    assert ids(0.25, "b") != quarter
    assert len(ids(None, "a")) == len(ids(1.0, "a")) == 400


# --- tampering -------------------------------------------------------------------------


def test_the_scrub_finds_a_tampered_object_and_a_missing_one(
        settings: Settings, footage: Footage, caplog: pytest.LogCaptureFixture) -> None:
    store = get_object_store(settings)
    c = footage.chunks
    store.delete(c[0].object_key)  # every version: gone
    flipped = bytearray(store.get(c[1].object_key))
    flipped[len(flipped) // 2] ^= 0x01
    store.put(c[1].object_key, bytes(flipped))  # same size, one bit changed
    store.put(c[2].object_key, store.get(c[2].object_key)[:-100])  # truncated

    with caplog.at_level(logging.ERROR, logger="vigil.retention.scrub"):
        report = scrub_service.scrub(settings=settings, camera=footage.camera)

    assert report.complete and report.checked == CHUNKS
    assert _found(report) == {(0, "object.missing"), (1, "object.decrypt"),
                              (2, "object.size")}
    assert report.counts == {Check.OBJECT_MISSING: 1, Check.OBJECT_DECRYPT: 1,
                             Check.OBJECT_SIZE: 1}
    events = _events("scrub.mismatch", report.run_id)
    assert {(e.detail["seq"], e.detail["check"]) for e in events} == _found(report)
    for event in events:
        chunk = c[event.detail["seq"]]
        assert event.actor == "system" and event.target_type == "chunk"
        assert event.target_id == str(chunk.id)
        assert event.detail["camera"] == footage.camera
        assert event.detail["object_key"] == chunk.object_key
        assert event.detail["message"]
    alarms = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALARM")]
    assert len(alarms) == 3 and all(footage.camera in a for a in alarms)
    (done,) = _events("scrub.completed", report.run_id)
    assert done.detail["mismatches"] == 3
    assert done.detail["by_check"] == {"object.decrypt": 1, "object.missing": 1,
                                       "object.size": 1}

    result = _cli("--all", "--camera", footage.camera)
    assert result.returncode == 1, result.stderr
    assert "object.missing" in result.stdout and "3 mismatch(es)" in result.stdout


def test_a_chunk_sealed_under_another_hash_fails_object_hash(
        settings: Settings, footage: Footage) -> None:
    """Sealed (and catalogued) under a hash that is not its plaintext's: the tag verifies,
    the plaintext check does not; the changed sha256 also breaks the chunk's chain link."""
    chunk = footage.chunks[3]
    provider = keys.file_key_ring(settings.home_dir)
    store = get_object_store(settings)
    with session_scope() as session:
        plaintext = read_plaintext(session=session, provider=provider, store=store,
                                   chunk=chunk)
    wrong = hashlib.sha256(b"another chunk").digest()
    sealed = io.BytesIO()
    result = crypto.seal_stream(io.BytesIO(plaintext), sealed, camera_id=chunk.camera_id,
                                seq=chunk.seq, start_us=to_us(chunk.start_at),
                                plaintext_sha256=wrong)
    assert result.stored_bytes == chunk.stored_bytes
    store.put(chunk.object_key, sealed.getvalue())
    with session_scope() as session:
        key = keys.new_data_key(session=session, provider=provider, data_key=result.data_key)
        session.execute(update(Chunk).where(Chunk.id == chunk.id)
                        .values(sha256=wrong, data_key_id=key.id))

    report = scrub_service.scrub(settings=settings, camera=footage.camera)
    assert _found(report) == {(3, "object.hash"), (3, "chain.link")}


def test_an_altered_chain_hash_is_found_as_chain_link(settings: Settings,
                                                      footage: Footage) -> None:
    with session_scope() as session:
        session.execute(update(Chunk).where(Chunk.id == footage.chunks[2].id)
                        .values(chain_hash=bytes(32)))

    report = scrub_service.scrub(settings=settings, camera=footage.camera)
    # The row's own link breaks, and so does its successor's, which follows the old hash.
    assert _found(report) == {(2, "chain.link"), (3, "chain.link")}
    assert len(_events("scrub.mismatch", report.run_id)) == 2


def test_a_live_chunk_with_a_destroyed_key_is_a_mismatch(settings: Settings,
                                                         footage: Footage) -> None:
    with session_scope() as session:
        session.execute(update(DataKey).where(DataKey.id == footage.chunks[0].data_key_id)
                        .values(wrapped=None, destroyed_at=datetime.now(UTC)))

    report = scrub_service.scrub(settings=settings, camera=footage.camera)
    assert _found(report) == {(0, "key.destroyed")}
    assert report.bytes_read == sum(c.stored_bytes for c in footage.chunks) \
        - footage.chunks[0].stored_bytes  # not read: it cannot be opened

    # The object store fails at the same chunk: what the catalog showed is still reported.
    stopped = scrub_service.scrub(settings=_dead_s3_settings(settings), camera=footage.camera)
    assert not stopped.complete and stopped.checked == 0
    assert _found(stopped) == {(0, "key.destroyed")}


def _remove_like_retention(settings: Settings, chunk: Chunk) -> None:
    """What the sweeper does to an expired chunk (D1-D3), without its records."""
    with session_scope() as session:
        session.execute(delete(Chunk).where(Chunk.id == chunk.id))
    get_object_store(settings).delete(chunk.object_key)
    with session_scope() as session:
        session.execute(update(DataKey).where(DataKey.id == chunk.data_key_id)
                        .values(wrapped=None, destroyed_at=datetime.now(UTC)))


def test_what_retention_removed_is_no_mismatch(settings: Settings, footage: Footage) -> None:
    """Chunks 0 and 1 expired: chunk 2's link cannot be checked (not a mismatch). Chunk 4
    is removed while the scrub runs, after its row was read: not a mismatch either."""
    c = footage.chunks
    _remove_like_retention(settings, c[0])
    _remove_like_retention(settings, c[1])

    def sweep_meanwhile(checked: int, expected: int | None) -> None:
        if checked == 1:
            _remove_like_retention(settings, c[4])

    report = scrub_service.scrub(settings=settings, camera=footage.camera,
                                 on_progress=sweep_meanwhile)
    assert report.complete and report.checked == 3
    assert report.mismatch_count == 0
    assert _events("scrub.mismatch", report.run_id) == []
    assert report.chain_unchecked == 1 and report.removed == 1
    assert {(n.chunk.seq, n.message) for n in report.notes} == {
        (2, scrub_service.PREDECESSOR_MISSING), (4, scrub_service.REMOVED_DURING_SCRUB)}


# --- outages and the command line -------------------------------------------------------


def test_an_object_store_outage_stops_the_scrub_without_mismatches(
        settings: Settings, clean: Footage) -> None:
    report = scrub_service.scrub(settings=_dead_s3_settings(settings), camera=clean.camera)
    assert not report.complete and "object store" in (report.stopped_by or "")
    assert report.checked == 0 and report.mismatch_count == 0
    assert _events("scrub.mismatch", report.run_id) == []
    assert _events("scrub.completed", report.run_id) == []
    (stopped,) = _events("scrub.stopped", report.run_id)
    assert stopped.detail["complete"] is False and stopped.detail["stopped_by"]

    result = _cli("--all", "--camera", clean.camera,
                  env={**os.environ, **_dead_s3_env(settings)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "incomplete" in result.stderr


def test_the_command_exits_0_when_clean_and_2_on_an_error(clean: Footage) -> None:
    ok = _cli("--all", "--camera", clean.camera)
    assert ok.returncode == 0, ok.stderr
    assert f"{CHUNKS} chunk(s) checked" in ok.stdout and "0 mismatch(es)" in ok.stdout
    sampled = _cli("--sample", "1", "--camera", clean.camera, "--limit", "2")
    assert sampled.returncode == 0 and "2 chunk(s) checked" in sampled.stdout
    assert _cli("--camera", f"no-such-{uuid.uuid4().hex[:6]}").returncode == 2
    assert _cli("--sample", "0", "--camera", clean.camera).returncode == 2
    assert _cli("--sample", "0.5", "--all").returncode == 2
