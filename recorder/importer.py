"""``vigil import``: footage from a non-networked DVR into the chunk format and chain.

Footage pulled from a DVR (a USB stick, an export) enters the same encrypted,
hash-chained chunks as live footage, with its times taken from the operator and its
origin recorded on every chunk.

Procedure (``import_file``):

1. Refuse a naive ``start_at`` (docs/design/time.md T9) and a chunk length out of
   range; find the camera.
2. SHA-256 of the original file, streamed, before anything else reads it: the hash
   names the exact bytes the operator handed over.
3. Open it with PyAV; refuse a file with no video stream, or with video other than
   H.264 or H.265 (the recorder stores by stream copy only, never transcodes).
4. Take the camera's lease as recorder ``import:<uuid>`` (``recorder.leases``), so that
   a live recorder and an import never write one chain at once; a lease held by
   anyone else is a ``Conflict`` naming the holder. A background thread renews the
   lease every ``RENEW_INTERVAL`` while the import runs (a chunk's upload may take
   longer than the lease's TTL); it is released at the end, however the import ends.
5. Cut by stream copy exactly as the live path does (``segmenter.ChunkWriter`` and
   ``segmenter.decide_cut``, the camera's ``chunk_target_s`` unless overridden) into
   a private working directory ``<home>/spool/import-<uuid>`` (mode 0700), never the
   live spool's ``active/``. Every chunk starts at a video keyframe.
6. Place the chunks in wall time: the first starts at ``start_at``; every chunk
   starts at ``start_at`` plus its first keyframe's media time after the file's
   first keyframe, which is the previous chunk's end (T6: exactly contiguous).
   ``clock_source`` is ``import``.
7. Refuse an import whose ``[start, end)`` overlaps footage the camera already has,
   or that ends in the future (a live recorder resumes after the camera's last
   chunk, so a future end would stamp its footage late); nothing is stored yet.
8. Seal each chunk (``service.seal_chunk``) after the camera's committed chain tip,
   store it (``put`` verifies what it wrote) and delete its plaintext.
9. One transaction: confirm the lease is still this import's (storage W5), re-check
   the overlap, commit every chunk (``service.commit_chunk``), set each chunk's
   ``provenance``, append the audit event ``footage.import``, sign checkpoints.
   An import is therefore all or nothing in the catalog; objects stored by a failed
   import are orphans for the reconciler (storage I10).

Invariants:

* Imported footage never overlaps footage the camera already has, recorded or
  imported: one camera, one timeline, one answer to "what did it see at t".
* The chain order is the order of commits, not of times: an import appends after the
  camera's tip (``seq`` continues from it) even when its footage predates the live
  footage. Nothing relies on ``seq`` for time; the time index (``start_at``, see
  ``vigil.catalog.queries``) orders footage by time, and an auditor still proves the
  chain complete and unaltered by ``seq``.
* Every imported chunk carries ``provenance`` = ``kind``, ``import_id``,
  ``imported_by``, ``imported_at``, ``original_sha256``, ``original_name``,
  ``original_bytes`` and ``start_given`` (the start exactly as the operator gave it,
  offset included: DVR clocks are often local time, time.md "Imports").

Caveats:

* The working directory needs free space of about the file's size: the plaintext
  chunks are cut in full before anything is stored, so that a file that cannot be
  read to its end is refused before it touches storage or catalog. A working
  directory left by a crashed import is removed by the next import once that
  import's lease is gone.
* Chunks a live recorder sealed into its spool but has not committed are invisible
  here; if such a recorder lost or gave up the lease, its chunks meet the import's in
  the chain and fail to commit with ``ChainConflict`` (its spool keeps them and
  alarms) rather than break the chain.
* Raw elementary streams (``.h264``, ``.265``) carry no timestamps and are refused;
  remux them into MP4, MKV or MPEG-TS first.
* Checkpoints follow ``service.sign_checkpoints``' rule: a camera checkpointed less
  than ``CHECKPOINT_INTERVAL`` ago gets its next checkpoint with its next commit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import av
import av.container
import av.error
import av.stream
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from recorder import leases, segmenter, service
from recorder.runner import codec_params
from recorder.spool import ActiveChunk, PendingChunk
from vigil import audit, keys
from vigil.catalog.models import MAX_CHUNK_WALL_S, Chunk, ClockSource
from vigil.catalog.queries import chunks_overlapping
from vigil.db import session_scope
from vigil.errors import Conflict, InvalidInput
from vigil.intervals import Span
from vigil.objectstore import ObjectStore, get_object_store
from vigil.settings import Settings

log = logging.getLogger("vigil.recorder.import")

# Stream copy only (issue 3): the codecs cameras and DVRs record, as FFmpeg names them.
SUPPORTED_VIDEO_CODECS: Final = frozenset({"h264", "hevc"})
# Read size for hashing the original: large enough to stream at disk speed, small
# enough to hold nothing of a multi-gigabyte file in memory.
HASH_BLOCK_BYTES: Final = 1 << 20
# Share of the progress bar for cutting; sealing and storing take the rest.
CUT_SHARE: Final = 0.5
# Progress is reported in steps of at least this fraction, not once per packet.
PROGRESS_STEP: Final = 0.01
# Lease holder ids of imports, and the name of their working directories.
RECORDER_ID_PREFIX: Final = "import:"
WORKDIR_PREFIX: Final = "import-"
AUDIT_ACTION: Final = "footage.import"
# A chunk may span at most this much media time: the catalog's bound (time.md T4).
MAX_CHUNK_MEDIA_US: Final = MAX_CHUNK_WALL_S * 1_000_000


@dataclass(frozen=True)
class ImportResult:
    camera_id: int
    chunks: int
    first_seq: int
    last_seq: int
    start_at: datetime
    end_at: datetime
    original_sha256: str  # hex
    original_bytes: int


@dataclass(frozen=True)
class Original:
    """The file as the operator handed it over."""

    sha256: str  # hex
    size_bytes: int


@dataclass(frozen=True)
class CutChunk:
    """A plaintext chunk cut from the file, not yet placed in wall time."""

    path: Path
    media_duration_us: int
    codec: dict[str, Any]


# --- the public entry point ---------------------------------------------------------


def import_file(*, settings: Settings, path: Path, camera_name: str, start_at: datetime,
                actor: str, chunk_seconds: int | None = None,
                on_progress: Callable[[float], None] | None = None) -> ImportResult:
    """Import ``path`` as footage of ``camera_name`` starting at ``start_at``.

    Raises ``InvalidInput`` for a naive start, an unreadable or unsupported file or an
    import that overlaps existing footage; ``NotFound`` for an unknown camera;
    ``Conflict`` when another recorder or import holds the camera.
    """
    start_given = start_at.isoformat(timespec="microseconds")
    start_at = utc_start(start_at)
    check_chunk_seconds(chunk_seconds)
    with session_scope() as session:
        camera = service.get_camera(session=session, name=camera_name)
        camera_id, target_s = camera.id, chunk_seconds or camera.chunk_target_s
    original = hash_original(path)
    progress = _Progress(on_progress)
    with open_video(path) as container, \
            _ImportLease(camera_id=camera_id, camera_name=camera_name) as lease, \
            _workdir(settings.home_dir, lease=lease) as workdir:
        progress.media_us = media_duration_us(container)
        cuts = cut_file(container, workdir=workdir, target_us=target_s * 1_000_000,
                        name=path.name, progress=progress)
        placed = place(cuts, start_us=service.dt_to_us(start_at))
        span = Span(service.us_to_dt(placed[0][0]), service.us_to_dt(placed[-1][1]))
        provider = keys.file_key_ring(settings.home_dir)
        with session_scope() as session:
            refuse_overlap(session=session, camera_id=camera_id, camera_name=camera_name,
                           span=span)
            refuse_future(session=session, span=span)
            tip = service.committed_tip(session=session, camera_id=camera_id)
            sealer = service.make_sealer(session=session, provider=provider)
        pending = seal_and_store(cuts=cuts, placed=placed, camera_id=camera_id, tip=tip,
                                 sealer=sealer, store=get_object_store(settings),
                                 lease=lease, progress=progress)
        provenance = {"kind": "import", "import_id": lease.import_id,
                      "imported_by": actor,
                      "imported_at": datetime.now(UTC).isoformat(timespec="microseconds"),
                      "original_sha256": original.sha256, "original_name": path.name,
                      "original_bytes": original.size_bytes,
                      "start_given": start_given}
        with session_scope() as session:
            lease.confirm(session=session)
            refuse_overlap(session=session, camera_id=camera_id, camera_name=camera_name,
                           span=span)
            commit_import(session=session, pending=pending, provenance=provenance,
                          actor=actor, camera_name=camera_name, span=span)
            service.sign_checkpoints(session=session, provider=provider)
    progress.finished()
    log.info("imported %s into camera %s: %d chunks over [%s, %s)", path.name, camera_name,
             len(pending), span.start.isoformat(), span.end.isoformat())
    return ImportResult(camera_id=camera_id, chunks=len(pending), first_seq=pending[0].seq,
                        last_seq=pending[-1].seq, start_at=span.start, end_at=span.end,
                        original_sha256=original.sha256, original_bytes=original.size_bytes)


# --- checks (pure) ------------------------------------------------------------------


def utc_start(start_at: datetime) -> datetime:
    """The import's start in UTC; a naive time could mean any of 24 hours (T9)."""
    if start_at.tzinfo is None or start_at.utcoffset() is None:
        raise InvalidInput(f"the start time {start_at.isoformat()} has no UTC offset; give "
                           "one, e.g. 2026-11-21T08:30:00+08:00")
    return start_at.astimezone(UTC)


def check_chunk_seconds(chunk_seconds: int | None) -> None:
    if chunk_seconds is not None and not (
            service.MIN_CHUNK_S <= chunk_seconds <= service.MAX_CHUNK_S):
        raise InvalidInput(f"chunk length must be {service.MIN_CHUNK_S} to "
                           f"{service.MAX_CHUNK_S} s, not {chunk_seconds}")


def check_media_us(media_us: int, *, offset_us: int, name: str) -> None:
    """A chunk's media time must be positive and within the catalog's bound."""
    at = f"{offset_us / 1e6:.3f} s into {name}"
    if media_us <= 0:
        raise InvalidInput(f"the video timestamps go backward {at}; the file cannot be "
                           "placed in time")
    if media_us > MAX_CHUNK_MEDIA_US:
        raise InvalidInput(f"no video keyframe for {media_us / 1e6:.0f} s from {at} (or "
                           f"its timestamps jump); a chunk may span at most "
                           f"{MAX_CHUNK_WALL_S} s")


def place(cuts: Sequence[CutChunk], *, start_us: int) -> list[tuple[int, int]]:
    """Each chunk's wall-clock ``[start, end)`` in µs: ``start_us`` plus the media time
    before the chunk, so that each chunk starts where the previous one ends (T6)."""
    placed = []
    for cut in cuts:
        placed.append((start_us, start_us + cut.media_duration_us))
        start_us += cut.media_duration_us
    return placed


# --- the original file --------------------------------------------------------------


def hash_original(path: Path) -> Original:
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            digest.update(block)
            size += len(block)
    return Original(sha256=digest.hexdigest(), size_bytes=size)


@contextmanager
def open_video(path: Path) -> Iterator[av.container.InputContainer]:
    """Open the file; refuse one without H.264 or H.265 video."""
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise InvalidInput(f"{path.name} is not a media file FFmpeg can read "
                           f"({exc.strerror or type(exc).__name__})") from None
    try:
        if not container.streams.video:
            raise InvalidInput(f"{path.name} has no video stream")
        codec = container.streams.video[0].codec_context.name
        if codec not in SUPPORTED_VIDEO_CODECS:
            raise InvalidInput(f"{path.name} holds {codec} video; only H.264 and H.265 are "
                               "stored (by stream copy, never transcoded)")
        yield container
    finally:
        container.close()


def media_duration_us(container: av.container.InputContainer) -> int | None:
    """The file's duration as its container states it, for progress only."""
    if container.duration is not None and container.duration > 0:
        return int(container.duration)  # in AV_TIME_BASE units: µs
    video = container.streams.video[0]
    if video.duration is not None and video.time_base is not None:
        return int(video.duration * video.time_base * 1_000_000)
    return None


# --- cutting (as the live path does) ------------------------------------------------


class _Progress:
    """Reports the import's progress in [0, 1]: cutting first, then storing."""

    def __init__(self, callback: Callable[[float], None] | None) -> None:
        self._callback = callback
        self._last = 0.0
        self.media_us: int | None = None

    def cutting(self, offset_us: int) -> None:
        if self.media_us:
            self._report(CUT_SHARE * min(1.0, max(0.0, offset_us / self.media_us)))

    def storing(self, *, done: int, total: int) -> None:
        self._report(CUT_SHARE + (1.0 - CUT_SHARE) * done / total)

    def finished(self) -> None:
        if self._callback is not None:
            self._callback(1.0)

    def _report(self, fraction: float) -> None:
        if self._callback is not None and fraction >= self._last + PROGRESS_STEP:
            self._last = fraction
            self._callback(fraction)


def _packets(container: av.container.InputContainer, streams: list[av.stream.Stream],
             name: str) -> Iterator[av.Packet]:
    """The file's packets; a demuxing failure is the file's fault, said so."""
    demux = container.demux(streams)
    while True:
        try:
            packet = next(demux)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            raise InvalidInput(f"{name} cannot be read to its end "
                               f"({exc.strerror or type(exc).__name__})") from None
        yield packet


def cut_file(container: av.container.InputContainer, *, workdir: Path, target_us: int,
             name: str, progress: _Progress) -> list[CutChunk]:
    """Stream-copy the file into chunks cut at keyframes (``segmenter.decide_cut``),
    skipping what precedes the first video keyframe, as a live run does."""
    video = container.streams.video[0]
    streams = [video, *container.streams.audio[:1]]
    watch = segmenter.ParameterWatch(video.codec_context.name)
    cuts: list[CutChunk] = []
    writer: segmenter.ChunkWriter | None = None
    first_us = chunk_first_us = 0
    codec: dict[str, Any] = {}
    for packet in _packets(container, streams, name):
        if packet.dts is None or packet.pts is None:
            continue
        pts_us = int(packet.pts * packet.time_base * 1_000_000)
        is_video = packet.stream.index == video.index
        changed = is_video and watch.changed(packet)
        if writer is None:
            if not (is_video and packet.is_keyframe):
                continue  # a chunk starts with a keyframe: it must decode alone
            first_us = chunk_first_us = pts_us
            writer, codec = _start_chunk(workdir, 0, streams)
        elif is_video:
            decision = segmenter.decide_cut(
                elapsed_media_us=pts_us - chunk_first_us, target_us=target_us,
                is_video_keyframe=packet.is_keyframe, params_changed=changed)
            if decision.cut:
                media_us = pts_us - chunk_first_us
                check_media_us(media_us, offset_us=chunk_first_us - first_us, name=name)
                writer.close()
                cuts.append(CutChunk(path=writer.path, media_duration_us=media_us,
                                     codec=codec))
                chunk_first_us = pts_us
                writer, codec = _start_chunk(workdir, len(cuts), streams)
            progress.cutting(pts_us - first_us)
        writer.write(packet)
    if writer is not None:
        last = writer.close()
        if last.media_duration_us > 0:  # else a lone last frame without a duration
            check_media_us(last.media_duration_us, offset_us=chunk_first_us - first_us,
                           name=name)
            cuts.append(CutChunk(path=last.path, media_duration_us=last.media_duration_us,
                                 codec=codec))
    if not cuts:
        raise InvalidInput(f"{name} has no playable video: no keyframe with timestamps (a "
                           "raw .h264 or .265 stream has none: remux it into MP4 or "
                           "MPEG-TS first)")
    return cuts


def _start_chunk(workdir: Path, index: int, streams: list[av.stream.Stream]
                 ) -> tuple[segmenter.ChunkWriter, dict[str, Any]]:
    path = workdir / f"{index:08d}.mov"
    return segmenter.ChunkWriter(path, streams), codec_params(streams)


# --- the catalog --------------------------------------------------------------------


def refuse_overlap(*, session: Session, camera_id: int, camera_name: str, span: Span) -> None:
    existing = chunks_overlapping(session, camera_id=camera_id, window=span)
    if existing:
        raise InvalidInput(
            f"the import would cover [{span.start.isoformat()}, {span.end.isoformat()}), "
            f"but camera {camera_name!r} already has footage from "
            f"{existing[0].start_at.isoformat()} to {existing[-1].end_at.isoformat()} "
            f"({len(existing)} chunks) in that range; imported footage must not overlap "
            "recorded footage: check --start and its UTC offset")


def refuse_future(*, session: Session, span: Span) -> None:
    """No footage ends after now (the database's clock, as for leases)."""
    now = session.scalar(select(func.now()))
    assert now is not None
    if span.end > now:
        raise InvalidInput(f"the import would end at {span.end.isoformat()}, after now "
                           f"({now.isoformat()}); check --start and its UTC offset")


def seal_and_store(*, cuts: Sequence[CutChunk], placed: Sequence[tuple[int, int]],
                   camera_id: int, tip: service.Tip, sealer: service.Sealer,
                   store: ObjectStore, lease: _ImportLease, progress: _Progress
                   ) -> list[PendingChunk]:
    """Seal each chunk after ``tip`` and store it (``put`` verifies); storage W2-W4."""
    pending: list[PendingChunk] = []
    for index, (cut, (start_us, end_us)) in enumerate(zip(cuts, placed, strict=True)):
        active = ActiveChunk(camera_id=camera_id, seq=tip.seq + 1,
                             prev_chain_hash=tip.chain_hash.hex(), anchor_us=start_us,
                             clock_source=ClockSource.IMPORT.value, first_of_run=index == 0)
        sealed_path = cut.path.with_suffix(".vch")
        chunk = service.seal_chunk(sealer=sealer, plaintext_path=cut.path,
                                   sealed_path=sealed_path, active=active,
                                   start_us=start_us, end_us=end_us,
                                   media_duration_us=cut.media_duration_us, codec=cut.codec)
        cut.path.unlink()
        store.put_file(chunk.object_key, sealed_path, sha256_hex=chunk.stored_sha256)
        sealed_path.unlink()
        pending.append(chunk)
        tip = service.Tip(chunk.seq, bytes.fromhex(chunk.chain_hash))
        progress.storing(done=index + 1, total=len(cuts))
        lease.check()
    return pending


def commit_import(*, session: Session, pending: Sequence[PendingChunk],
                  provenance: dict[str, Any], actor: str, camera_name: str,
                  span: Span) -> None:
    """Commit the chunks with their provenance and the audit event (storage W5)."""
    for chunk in pending:
        committed = service.commit_chunk(session=session, pending=chunk)
        assert committed, "a fresh object key is never committed twice"
    camera_id, first, last = pending[0].camera_id, pending[0].seq, pending[-1].seq
    session.execute(update(Chunk).where(Chunk.camera_id == camera_id,
                                        Chunk.seq.between(first, last))
                    .values(provenance=provenance))
    audit.record(session=session, actor=actor, action=AUDIT_ACTION, target_type="camera",
                 target_id=str(camera_id),
                 detail={"camera": camera_name, "start_at": span.start.isoformat(),
                         "end_at": span.end.isoformat(), "chunks": len(pending),
                         "first_seq": first, "last_seq": last,
                         "import_id": provenance["import_id"],
                         "original_sha256": provenance["original_sha256"],
                         "original_name": provenance["original_name"],
                         "original_bytes": provenance["original_bytes"],
                         "start_given": provenance["start_given"]})


# --- the lease and the working directory --------------------------------------------


class _ImportLease:
    """The camera's lease, held by this import from start to end.

    Taken on entry (``Conflict`` if anyone else holds it), renewed in the background
    every ``leases.RENEW_INTERVAL``, confirmed inside the commit transaction,
    released on exit.
    """

    def __init__(self, *, camera_id: int, camera_name: str) -> None:
        self.import_id = uuid.uuid4().hex
        self.recorder_id = f"{RECORDER_ID_PREFIX}{self.import_id}"
        self.camera_id, self.camera_name = camera_id, camera_name
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True,
                                        name=f"import-lease-{camera_id}")

    def __enter__(self) -> _ImportLease:
        with session_scope() as session:
            got = leases.acquire(session=session, recorder_id=self.recorder_id,
                                 camera_ids=[self.camera_id])
            holder = leases.holders(session=session).get(self.camera_id)
        if self.camera_id not in got:
            if holder is None:
                raise Conflict(f"camera {self.camera_name!r} is disabled; enable it before "
                               "importing footage into it")
            raise Conflict(f"camera {self.camera_name!r} is held by {holder!r} (a live "
                           "recorder, or an import if it starts with 'import:'); a camera's "
                           "chain has one writer at a time: stop that recorder for this "
                           "camera, or let the import finish, and try again")
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        try:
            with session_scope() as session:
                leases.release(session=session, recorder_id=self.recorder_id)
        except DBAPIError:
            log.warning("lease of camera %s not released (database unavailable); it "
                        "expires in %s", self.camera_name, leases.LEASE_TTL)

    def _renew(self) -> None:
        while not self._stop.wait(leases.RENEW_INTERVAL.total_seconds()):
            try:
                with session_scope() as session:
                    held = leases.renew(session=session, recorder_id=self.recorder_id)
            except DBAPIError:
                continue  # a short outage; the commit's confirmation decides
            if self.camera_id not in held:
                self._lost.set()
                return

    def _lost_error(self) -> Conflict:
        return Conflict(f"the import lost the lease of camera {self.camera_name!r} to "
                        "another recorder; nothing was committed")

    def check(self) -> None:
        if self._lost.is_set():
            raise self._lost_error()

    def confirm(self, *, session: Session) -> None:
        """Within the commit's transaction: the lease is still this import's."""
        if self.camera_id not in leases.renew(session=session, recorder_id=self.recorder_id):
            raise self._lost_error()


@contextmanager
def _workdir(home: Path, *, lease: _ImportLease) -> Iterator[Path]:
    """A private directory for the plaintext chunks, removed at the end. Directories of
    imports whose lease is gone (a crash) are removed first: plaintext footage must not
    linger."""
    root = home / "spool"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with session_scope() as session:
        live = set(leases.holders(session=session).values())
    for stale in root.glob(f"{WORKDIR_PREFIX}*"):
        if f"{RECORDER_ID_PREFIX}{stale.name.removeprefix(WORKDIR_PREFIX)}" not in live:
            shutil.rmtree(stale, ignore_errors=True)
    path = root / f"{WORKDIR_PREFIX}{lease.import_id}"
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
