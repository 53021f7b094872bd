"""`vigil import`: DVR footage into sealed, chained chunks, marked with its provenance."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import av
import imageio_ffmpeg
import pytest
from sqlalchemy import func, select, text

from recorder import importer, leases, service
from recorder.importer import CutChunk
from tests.media import encode
from vigil import chain, keys
from vigil.catalog.models import AuditEvent, ChainHead, Checkpoint, Chunk
from vigil.catalog.queries import recorded_ranges
from vigil.chunks import link_of, read_plaintext
from vigil.db import session_scope
from vigil.errors import Conflict, InvalidInput
from vigil.intervals import Span
from vigil.objectstore import get_object_store
from vigil.settings import Settings

# DVR clocks are often local time: the operator gives the offset, the import keeps it.
START = datetime(2025, 3, 30, 9, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=8)))
SECONDS = 10
FPS = 25  # tests.media.encode's default


@pytest.fixture(scope="module")
def h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode(tmp_path_factory.mktemp("dvr") / "dvr.mp4", seconds=SECONDS, gop=25)


@pytest.fixture(scope="module")
def short_h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode(tmp_path_factory.mktemp("dvr") / "short.mp4", seconds=6, gop=25,
                  audio=False)


def _camera(chunk_seconds: int = 2) -> str:
    name = f"dvr-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        # Nothing listens on the discard port: a recorder that leased it records nothing.
        service.add_camera(session=session, name=name, url="rtsp://127.0.0.1:9/dvr",
                           chunk_seconds=chunk_seconds, actor="test")
    return name


def _camera_id(name: str) -> int:
    with session_scope() as session:
        return service.get_camera(session=session, name=name).id


def _chunks(camera_id: int) -> list[Chunk]:
    with session_scope() as session:
        return list(session.scalars(select(Chunk).where(Chunk.camera_id == camera_id)
                                    .order_by(Chunk.seq)))


def _import_events(camera_id: int) -> list[AuditEvent]:
    with session_scope() as session:
        return list(session.scalars(select(AuditEvent).where(
            AuditEvent.action == "footage.import", AuditEvent.target_id == str(camera_id))))


def _plaintext(settings: Settings, chunk: Chunk) -> bytes:
    with session_scope() as session:
        return read_plaintext(session=session,
                                     provider=keys.file_key_ring(settings.home_dir),
                                     store=get_object_store(settings), chunk=chunk)


def _verify_chain(chunks: list[Chunk]) -> None:
    chain.verify_chain((link_of(c), c.chain_hash) for c in chunks)


def _state(camera_id: int) -> tuple[int, int | None, int]:
    """Chunk count, chain head and import events: what a refused import must not change."""
    with session_scope() as session:
        count = session.scalar(select(func.count()).select_from(Chunk)
                               .where(Chunk.camera_id == camera_id))
        head = session.get(ChainHead, camera_id)
    return count or 0, None if head is None else head.seq, len(_import_events(camera_id))


def _holder(camera_id: int) -> str | None:
    with session_scope() as session:
        return leases.holders(session=session).get(camera_id)


def _import(settings: Settings, path: Path, name: str, start_at: datetime = START,
            **kwargs: object) -> importer.ImportResult:
    return importer.import_file(settings=settings, path=path, camera_name=name,
                                start_at=start_at, actor="alice", **kwargs)  # type: ignore[arg-type]


# --- the whole path, both codecs ------------------------------------------------------


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_an_import_becomes_contiguous_sealed_chained_playable_chunks(
        settings: Settings, engine, tmp_path: Path, h264: Path, codec: str) -> None:
    source = h264 if codec == "libx264" else encode(tmp_path / "dvr.mp4", seconds=SECONDS,
                                                    codec=codec, gop=25)
    name = _camera(chunk_seconds=2)
    fractions: list[float] = []
    result = _import(settings, source, name, on_progress=fractions.append)

    chunks = _chunks(result.camera_id)
    assert len(chunks) == result.chunks == 5  # cut at the keyframes at 2, 4, 6 and 8 s
    assert [c.seq for c in chunks] == list(range(5)) == [*range(result.first_seq,
                                                               result.last_seq + 1)]
    assert chunks[0].start_at == result.start_at == START
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start_at == before.end_at  # exactly contiguous (T6)
    assert chunks[-1].end_at == result.end_at == START + timedelta(seconds=SECONDS)
    assert all(c.clock_source.value == "import" for c in chunks)
    assert all(c.end_at - c.start_at == timedelta(microseconds=c.media_duration_us)
               for c in chunks)

    original = source.read_bytes()
    assert result.original_sha256 == hashlib.sha256(original).hexdigest()
    assert result.original_bytes == len(original)
    provenance = chunks[0].provenance
    assert provenance is not None
    assert provenance["kind"] == "import"
    assert provenance["imported_by"] == "alice"
    assert provenance["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert provenance["original_name"] == source.name
    assert provenance["original_bytes"] == len(original)
    assert provenance["start_given"] == "2025-03-30T09:00:00.250000+08:00"
    imported_at = datetime.fromisoformat(provenance["imported_at"])
    assert imported_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - imported_at) < timedelta(minutes=5)
    assert all(c.provenance == provenance for c in chunks)

    _verify_chain(chunks)
    frames = 0
    for chunk in chunks:
        media = tmp_path / f"{chunk.seq}.mov"
        media.write_bytes(_plaintext(settings, chunk))
        with av.open(str(media)) as c:
            assert c.streams.video[0].codec_context.name == ("hevc" if codec == "libx265"
                                                             else "h264")
            first = next(c.demux(video=0))
            assert first.is_keyframe
        with av.open(str(media)) as c:
            decoded = sum(1 for _ in c.decode(video=0))  # every frame decodes
        assert decoded == chunk.media_duration_us * FPS // 1_000_000, chunk.seq
        frames += decoded
    assert frames == SECONDS * FPS

    (event,) = _import_events(result.camera_id)
    assert event.actor == "alice"
    assert event.detail["chunks"] == 5
    assert event.detail["original_sha256"] == result.original_sha256
    assert datetime.fromisoformat(event.detail["start_at"]) == START
    assert datetime.fromisoformat(event.detail["end_at"]) == result.end_at
    with session_scope() as session:
        checkpoint = session.scalars(select(Checkpoint).where(
            Checkpoint.camera_id == result.camera_id)).one()
    assert (checkpoint.seq, checkpoint.chain_hash) == (4, chunks[-1].chain_hash)

    assert fractions[-1] == 1.0
    assert fractions == sorted(fractions) and 0 < fractions[0]
    assert any(f < importer.CUT_SHARE for f in fractions)  # progress while cutting
    assert _holder(result.camera_id) is None  # the lease was released
    assert not list((settings.home_dir / "spool").glob("import-*"))  # no plaintext left


def test_imports_continue_the_chain_in_commit_order_whatever_their_times(
        settings: Settings, engine, h264: Path, short_h264: Path) -> None:
    name = _camera(chunk_seconds=3)
    later = _import(settings, h264, name)
    # Earlier footage, ending exactly where the first import starts: touching, not
    # overlapping ([start, end) is half-open).
    earlier = _import(settings, short_h264, name, start_at=START - timedelta(seconds=6))
    assert earlier.first_seq == later.last_seq + 1
    assert earlier.end_at == later.start_at
    chunks = _chunks(later.camera_id)
    _verify_chain(chunks)  # one chain, in seq order
    assert chunks[later.last_seq + 1].start_at < chunks[0].start_at  # seq is not time
    assert len(_import_events(later.camera_id)) == 2
    with session_scope() as session:
        ranges = recorded_ranges(session, camera_id=later.camera_id,
                                 window=Span(START - timedelta(hours=1),
                                             START + timedelta(hours=1)))
    assert ranges == [Span(earlier.start_at, later.end_at)]


# --- refusals -------------------------------------------------------------------------


def test_an_overlapping_import_is_refused_and_commits_nothing(
        settings: Settings, engine, h264: Path) -> None:
    name = _camera()
    camera_id = _import(settings, h264, name).camera_id
    before = _state(camera_id)
    with pytest.raises(InvalidInput, match="must not overlap"):
        _import(settings, h264, name, start_at=START + timedelta(seconds=SECONDS - 1))
    assert _state(camera_id) == before
    assert _holder(camera_id) is None


def test_a_naive_start_is_refused(settings: Settings, engine, h264: Path) -> None:
    name = _camera()
    with pytest.raises(InvalidInput, match="no UTC offset"):
        _import(settings, h264, name, start_at=START.replace(tzinfo=None))
    assert _state(_camera_id(name)) == (0, None, 0)


def test_footage_that_would_end_in_the_future_is_refused(
        settings: Settings, engine, h264: Path) -> None:
    name = _camera()
    with pytest.raises(InvalidInput, match="after now"):
        _import(settings, h264, name, start_at=datetime.now(UTC) - timedelta(seconds=2))
    assert _state(_camera_id(name)) == (0, None, 0)


def _audio_only(path: Path) -> Path:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
                    "-i", "sine=frequency=440:sample_rate=48000", "-t", "2", "-c:a", "aac",
                    str(path)], check=True, capture_output=True, timeout=60)
    return path


def _raw_h264(path: Path) -> Path:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc=size=160x120:rate=25", "-t", "2", "-c:v", "libx264",
                    str(path)], check=True, capture_output=True, timeout=60)
    return path


def _text_file(path: Path) -> Path:
    path.write_text("not video")
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: _audio_only(p / "tone.m4a"), "has no video stream"),
    (lambda p: encode(p / "mpeg4.mp4", seconds=2, codec="mpeg4"), "holds mpeg4 video"),
    (lambda p: _raw_h264(p / "dvr.h264"), "no keyframe with timestamps"),
    (lambda p: _text_file(p / "notes.txt"), "not a media file"),
    (lambda p: p / "missing.mp4", "is not a file"),
], ids=["audio-only", "mpeg4", "raw-h264", "text", "missing"])
def test_a_file_without_storable_video_is_refused_clearly(
        settings: Settings, engine, tmp_path: Path, make: Callable[[Path], Path],
        message: str) -> None:
    name = _camera()
    with pytest.raises(InvalidInput, match=message):
        _import(settings, make(tmp_path), name)
    camera_id = _camera_id(name)
    assert _state(camera_id) == (0, None, 0)
    assert _holder(camera_id) is None


def test_a_camera_held_by_another_recorder_is_refused_by_name(
        settings: Settings, engine, h264: Path) -> None:
    name = _camera()
    camera_id = _camera_id(name)
    other = "elsewhere:4242:live"
    with session_scope() as session:
        assert leases.acquire(session=session, recorder_id=other,
                              camera_ids=[camera_id]) == {camera_id}
    try:
        with pytest.raises(Conflict, match=other):
            _import(settings, h264, name)
        assert _state(camera_id) == (0, None, 0)
        assert _holder(camera_id) == other  # untouched
    finally:
        with session_scope() as session:
            leases.release(session=session, recorder_id=other)


def test_a_lease_lost_during_the_import_commits_nothing(
        settings: Settings, engine, h264: Path) -> None:
    name = _camera()
    camera_id = _camera_id(name)
    thief = "elsewhere:4343:thief"

    def steal(fraction: float) -> None:
        if fraction > importer.CUT_SHARE and _holder(camera_id) != thief:
            with session_scope() as session:
                session.execute(text("UPDATE camera_leases SET recorder_id = :r "
                                     "WHERE camera_id = :c"), {"r": thief, "c": camera_id})

    try:
        with pytest.raises(Conflict, match="lost the lease"):
            _import(settings, h264, name, on_progress=steal)
        assert _state(camera_id) == (0, None, 0)
        assert _holder(camera_id) == thief  # the import released only its own lease
    finally:
        with session_scope() as session:
            leases.release(session=session, recorder_id=thief)


# --- the pure parts -------------------------------------------------------------------


def test_chunks_are_placed_contiguously_from_the_start() -> None:
    cuts = [CutChunk(path=Path(f"{i}"), media_duration_us=us, codec={})
            for i, us in enumerate([2_000_000, 2_040_000, 1_960_000])]
    assert importer.place(cuts, start_us=1_000) == [
        (1_000, 2_001_000), (2_001_000, 4_041_000), (4_041_000, 6_001_000)]


def test_chunk_media_time_must_be_positive_and_bounded() -> None:
    importer.check_media_us(importer.MAX_CHUNK_MEDIA_US, offset_us=0, name="f")
    with pytest.raises(InvalidInput, match="go backward"):
        importer.check_media_us(0, offset_us=0, name="f")
    with pytest.raises(InvalidInput, match="at most 600 s"):
        importer.check_media_us(importer.MAX_CHUNK_MEDIA_US + 1, offset_us=0, name="f")


def test_the_start_is_converted_to_utc_and_chunk_lengths_are_checked() -> None:
    assert importer.utc_start(START) == datetime(2025, 3, 30, 1, 0, 0, 250_000, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="chunk length"):
        importer.check_chunk_seconds(1)
    importer.check_chunk_seconds(None)
