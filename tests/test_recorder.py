"""Recording real RTSP cameras into encrypted, hash-chained chunks in S3."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from sqlalchemy import select

from recorder import record, service
from tests.cameras import RtspCamera
from vigil import chain, crypto, keys
from vigil.catalog.models import Camera, Checkpoint, Chunk, Key, RecordingGap
from vigil.chunks import link_of, read_plaintext
from vigil.db import session_scope
from vigil.objectstore import get_object_store
from vigil.settings import Settings

pytestmark = pytest.mark.slow


def _add_camera(url: str, chunk_seconds: int = 2) -> int:
    with session_scope() as session:
        cam = service.add_camera(session=session, name=f"cam-{uuid.uuid4().hex[:8]}",
                                 url=url, chunk_seconds=chunk_seconds, actor="test")
        return cam.id


def _record(settings: Settings, camera_id: int, seconds: float) -> None:
    with session_scope() as session:
        name = session.get(Camera, camera_id).name
    rec = record.start(settings, camera_names=[name])
    try:
        time.sleep(seconds)
    finally:
        rec.shutdown()


def _chunks(camera_id: int) -> list[Chunk]:
    with session_scope() as session:
        return list(session.scalars(select(Chunk).where(Chunk.camera_id == camera_id)
                                    .order_by(Chunk.seq)))


def _plaintext(settings: Settings, chunk: Chunk) -> bytes:
    with session_scope() as session:
        return read_plaintext(session=session,
                                     provider=keys.file_key_ring(settings.home_dir),
                                     store=get_object_store(settings), chunk=chunk)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


@pytest.mark.parametrize(("codec", "audio"), [("h264", "aac"), ("h265", "none")])
def test_a_recording_is_contiguous_encrypted_chained_and_playable(
        settings: Settings, engine, workdir: Path, codec: str, audio: str) -> None:
    with RtspCamera(codec=codec, audio=audio, width=320, height=240, kbps=400) as cam:
        camera_id = _add_camera(cam.url, chunk_seconds=2)
        _record(settings, camera_id, seconds=20)
    chunks = _chunks(camera_id)
    assert len(chunks) >= 8
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start_at == before.end_at  # one run: exactly contiguous
    assert all(1_500_000 <= c.media_duration_us <= 3_100_000 for c in chunks[:-1])
    assert {c.clock_source.value for c in chunks} <= {"rtcp", "receive"}

    chain.verify_chain([(link_of(c), c.chain_hash) for c in chunks])

    store = get_object_store(settings)
    for chunk in chunks:
        stored = store.get(chunk.object_key)
        assert len(stored) == chunk.stored_bytes
        for marker in (b"ftyp", b"moov", b"mdat", b"moof"):  # no readable media
            assert marker not in stored
        media = workdir / f"{chunk.seq}.mov"
        media.write_bytes(_plaintext(settings, chunk))
        with av.open(str(media)) as c:
            assert c.streams.video[0].codec_context.name == ("hevc" if codec == "h265"
                                                             else "h264")
            frames = sum(1 for _ in c.decode(video=0))
        # Every chunk decodes on its own, all of its media time (25 fps).
        assert abs(frames - chunk.media_duration_us * 25 / 1_000_000) <= 2, (chunk.seq, frames)

    with session_scope() as session:
        checkpoint = session.scalars(select(Checkpoint).where(
            Checkpoint.camera_id == camera_id).order_by(Checkpoint.seq.desc())).first()
        assert checkpoint is not None
        key = session.get(Key, checkpoint.key_id)
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        chain.verify_checkpoint(
            Ed25519PublicKey.from_public_bytes(key.public_key),
            chain.Checkpoint(camera_id=camera_id, seq=checkpoint.seq,
                             chain_hash=checkpoint.chain_hash,
                             signed_at_us=service.dt_to_us(checkpoint.signed_at),
                             key_fingerprint=key.fingerprint),
            checkpoint.signature)
        assert checkpoint.chain_hash == next(c.chain_hash for c in chunks
                                             if c.seq == checkpoint.seq)


def test_a_camera_that_goes_away_and_comes_back_leaves_one_gap(
        settings: Settings, engine) -> None:
    with RtspCamera(width=320, height=240, kbps=300) as cam:
        camera_id = _add_camera(cam.url, chunk_seconds=2)
        with session_scope() as session:
            name = session.get(Camera, camera_id).name
        rec = record.start(settings, camera_names=[name])
        try:
            time.sleep(6)
            cam.stop()
            time.sleep(4)
            cam.start()
            time.sleep(8)
        finally:
            rec.shutdown()
    chunks = _chunks(camera_id)
    breaks = [(a.end_at, b.start_at) for a, b in zip(chunks, chunks[1:], strict=False)
              if b.start_at != a.end_at]
    assert len(breaks) == 1
    with session_scope() as session:
        gaps = session.scalars(select(RecordingGap).where(
            RecordingGap.camera_id == camera_id)).all()
    assert [(g.start_at, g.end_at) for g in gaps] == breaks
    assert gaps[0].cause.value == "disconnect"
    assert (breaks[0][1] - breaks[0][0]).total_seconds() >= 3


def test_a_flipped_byte_in_storage_fails_decryption_by_name(settings: Settings, engine) -> None:
    with RtspCamera(width=320, height=240, kbps=300) as cam:
        camera_id = _add_camera(cam.url, chunk_seconds=2)
        _record(settings, camera_id, seconds=5)
    chunk = _chunks(camera_id)[0]
    store = get_object_store(settings)
    blob = bytearray(store.get(chunk.object_key))
    blob[len(blob) // 2] ^= 0x40
    store.put(chunk.object_key, bytes(blob))
    with pytest.raises(crypto.ChunkTampered, match=f"camera {camera_id} seq 0"):
        _plaintext(settings, chunk)


class _GarbageServer:
    """A TCP source that answers every connection with random bytes."""

    def __init__(self) -> None:
        import os
        import socket
        import threading

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._urandom = os.urandom
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    conn.sendall(self._urandom(512 * 1024))
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def test_garbage_is_a_counted_error_and_other_cameras_keep_recording(
        settings: Settings, engine, caplog: pytest.LogCaptureFixture) -> None:
    garbage = _GarbageServer()
    try:
        with RtspCamera(width=320, height=240, kbps=300) as cam:
            good_id = _add_camera(cam.url, chunk_seconds=2)
            bad_id = _add_camera(f"tcp://127.0.0.1:{garbage.port}", chunk_seconds=2)
            with session_scope() as session:
                names = [session.get(Camera, i).name for i in (good_id, bad_id)]
            with caplog.at_level("WARNING", logger="vigil.recorder"):
                rec = record.start(settings, camera_names=names)
                try:
                    time.sleep(10)
                    bad = next(c for c in rec.cameras if c.camera.id == bad_id)
                    assert bad.stats.errors >= 1
                    assert bad.stats.status == "reconnecting"
                    assert bad.stats.chunks == 0
                finally:
                    rec.shutdown()
    finally:
        garbage.close()
    good = _chunks(good_id)
    assert len(good) >= 3
    assert all(b.start_at == a.end_at for a, b in zip(good, good[1:], strict=False))
    assert _chunks(bad_id) == []
    assert any(f"camera {names[1]}" in r.getMessage() and "error" in r.getMessage()
               for r in caplog.records)


def test_a_full_spool_raises_an_alarm_and_starts_no_chunk(
        settings: Settings, engine, caplog: pytest.LogCaptureFixture) -> None:
    tight = settings.model_copy(update={"spool_budget_mb": 0})
    with RtspCamera(width=320, height=240, kbps=300) as cam:
        camera_id = _add_camera(cam.url, chunk_seconds=2)
        with session_scope() as session:
            name = session.get(Camera, camera_id).name
        with caplog.at_level("ERROR", logger="vigil.recorder"):
            rec = record.start(tight, camera_names=[name])
            try:
                time.sleep(6)
                assert rec.cameras[0].stats.spool_full
            finally:
                rec.shutdown()
    assert _chunks(camera_id) == []
    assert any("ALARM spool full" in r.getMessage() for r in caplog.records)


def test_a_resolution_change_midway_starts_a_new_chunk(settings: Settings, engine,
                                                       tmp_path: Path) -> None:
    import subprocess

    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    parts = []
    for i, size in enumerate(("320x240", "480x272")):
        part = tmp_path / f"part{i}.ts"
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc=size={size}:rate=25", "-t", "4", "-c:v", "libx264",
                        "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p",
                        "-output_ts_offset", str(4 * i), str(part)], check=True, timeout=60)
        parts.append(part.read_bytes())
    source = tmp_path / "camera.ts"
    source.write_bytes(b"".join(parts))  # one stream whose resolution changes at 4 s

    camera_id = _add_camera(str(source), chunk_seconds=60)
    with session_scope() as session:
        name = session.get(Camera, camera_id).name
    rec = record.start(settings, camera_names=[name])
    try:
        time.sleep(2)  # a file is read at once; the first run is over by then
    finally:
        rec.shutdown()
    first, second = _chunks(camera_id)[:2]
    assert second.start_at == first.end_at
    assert abs(first.media_duration_us - 4_000_000) <= 40_000
    sizes = []
    for chunk in (first, second):
        media = tmp_path / f"{chunk.seq}.mov"
        media.write_bytes(_plaintext(settings, chunk))
        with av.open(str(media)) as c:
            sizes.append({(f.width, f.height) for f in c.decode(video=0)})
    assert sizes == [{(320, 240)}, {(480, 272)}]


def test_stream_errors_never_log_camera_credentials(settings: Settings, engine,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from tests.support import free_ports

    (port,) = free_ports(1)  # nothing listens: every connection attempt fails
    camera_id = _add_camera(f"rtsp://operator:S3cret-Pa55@127.0.0.1:{port}/cam",
                            chunk_seconds=2)
    with session_scope() as session:
        name = session.get(Camera, camera_id).name
    with caplog.at_level("DEBUG"):
        rec = record.start(settings, camera_names=[name])
        try:
            time.sleep(3)
            stats = rec.cameras[0].stats
        finally:
            rec.shutdown()
    assert stats.errors >= 1
    # FFmpeg's message names the URL; it arrives redacted.
    assert f"rtsp://operator:***@127.0.0.1:{port}/cam" in (stats.last_error or "")
    assert "S3cret-Pa55" not in (stats.last_error or "")
    assert not any("S3cret-Pa55" in r.getMessage() for r in caplog.records)
