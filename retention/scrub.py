"""The integrity scrub: re-read stored chunks and check them against the catalog and the chain.

Each chunk the scrub selects goes through these checks, each with a name that the
report, the alarm and the audit event carry (docs/design/storage.md, "Integrity scrub"):

1. ``key.destroyed``: the chunk's data key was shredded (``data_keys.wrapped`` NULL).
   Retention destroys a key only after the chunk's row is gone (I8), so a live row with
   a destroyed key is a mismatch. ``key.unwrap``: the key is there but does not unwrap
   (its KEK is missing from the key ring, or the wrapped bytes were altered).
2. ``chain.link``: the chunk's chain hash must follow from its predecessor's chain hash
   and its own link fields (C6). When the predecessor is not in the catalog the link is
   reported as not checked, not as a mismatch (``_previous_chain_hash``).
3. ``object.missing``: the object does not exist (I1 broken).
4. ``object.size``: the object's size is not ``chunks.stored_bytes``. The object is then
   not read: it is not the one stored, and its size is no longer bounded by the row.
5. ``object.decrypt``: the envelope is broken or the GCM tag does not verify for the slot
   the catalog names (C2). Needs the data key.
6. ``object.hash``: the tag verified but the plaintext's SHA-256 is not ``chunks.sha256``
   (C3).

A chunk that fails a check is looked up again before anything is reported: if its row
is gone, retention removed it while the scrub ran, which is no mismatch. Every mismatch
is an ``ALARM`` log line and a ``scrub.mismatch`` audit event, committed at once; the run
ends with one ``scrub.completed`` event, or ``scrub.stopped`` when the object store failed
(an outage is not a mismatch and writes none) or the time budget ran out.

Memory stays flat: rows come in pages of ``PAGE_ROWS``, each in a short transaction, and
each object is streamed to a private working file and opened from there in blocks
(``crypto.open_sealed_file``), never held whole in memory.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from sqlalchemy import func, select, text, tuple_
from sqlalchemy.orm import Session

from recorder import service as recorder_service
from vigil import audit, chain, crypto, keys
from vigil.catalog.models import Camera, Chunk, DataKey
from vigil.catalog.queries import chain_hash_before
from vigil.chunks import link_of, slot_of
from vigil.db import session_scope
from vigil.errors import InvalidInput, NotFound, StorageError
from vigil.objectstore import ObjectStore, get_object_store
from vigil.settings import Settings

log = logging.getLogger("vigil.retention.scrub")

# Rows read per (short) transaction: no transaction stays open while objects are read.
PAGE_ROWS: Final = 100
# Mismatches and notes listed in a report; beyond this only counted (each one is still
# logged and audited), so that a scrub of a badly broken store keeps flat memory.
MAX_LISTED: Final = 1000
# A working directory left by a scrub that died is removed by the next one after this
# long without a change (a live scrub writes into its directory for every chunk).
STALE_WORKDIR_S: Final = 3600.0
# The scheduled scrub stops itself this long before the task's soft time limit
# (vigil.tasks.SOFT_TIME_LIMIT_S = 3300 s), so that it can still write its audit event.
SCHEDULED_BUDGET_S: Final = 3000.0
# The sample predicate keeps a chunk when the first 52 bits of md5(seed || id) fall
# below sample * 2**52: a fraction exact to 2**-52, a bigint PostgreSQL computes exactly.
_SAMPLE_BITS: Final = 52
_IN_SAMPLE: Final = text(
    f"('x' || substr(md5(:seed || chunks.id::text), 1, {_SAMPLE_BITS // 4}))"
    f"::bit({_SAMPLE_BITS})::bigint < :threshold")
# How crypto words a plaintext whose hash is not the slot's (ChunkTampered covers both
# that and a failed tag).
_PLAINTEXT_HASH_FAILURE: Final = "plaintext does not match"
_WORKDIR_PREFIX: Final = "scrub-"

PREDECESSOR_MISSING: Final = "chain link not checked: predecessor not in the catalog"
REMOVED_DURING_SCRUB: Final = "not checked: the chunk left the catalog during the scrub"


# --- the pure core --------------------------------------------------------------------


class Check(StrEnum):
    KEY_DESTROYED = "key.destroyed"
    KEY_UNWRAP = "key.unwrap"
    CHAIN_LINK = "chain.link"
    OBJECT_MISSING = "object.missing"
    OBJECT_SIZE = "object.size"
    OBJECT_DECRYPT = "object.decrypt"
    OBJECT_HASH = "object.hash"


@dataclass(frozen=True)
class ChunkRef:
    """Which chunk a finding is about."""

    chunk_id: int
    camera: str
    camera_id: int
    seq: int
    object_key: str


@dataclass(frozen=True)
class Mismatch:
    chunk: ChunkRef
    check: Check
    message: str

    def detail(self, run_id: str) -> dict[str, Any]:
        return {"scrub": run_id, "camera": self.chunk.camera, "seq": self.chunk.seq,
                "object_key": self.chunk.object_key, "check": self.check.value,
                "message": self.message}


@dataclass(frozen=True)
class Note:
    """Something not checked, and why: not a mismatch."""

    chunk: ChunkRef
    message: str


@dataclass
class ScrubReport:
    run_id: str
    seed: str  # the sample's seed: the same seed selects the same chunks
    sample: float | None  # None: every chunk
    limit: int | None
    camera: str | None
    started_at: datetime
    finished_at: datetime | None = None
    checked: int = 0
    bytes_read: int = 0
    counts: Counter[Check] = field(default_factory=Counter)
    mismatches: list[Mismatch] = field(default_factory=list)  # the first MAX_LISTED
    chain_unchecked: int = 0
    removed: int = 0
    notes: list[Note] = field(default_factory=list)  # the first MAX_LISTED
    stopped_by: str | None = None  # why the scrub ended early; None: it ran to the end

    @property
    def complete(self) -> bool:
        return self.stopped_by is None

    @property
    def mismatch_count(self) -> int:
        return sum(self.counts.values())

    def add_mismatch(self, mismatch: Mismatch) -> None:
        self.counts[mismatch.check] += 1
        if len(self.mismatches) < MAX_LISTED:
            self.mismatches.append(mismatch)

    def add_note(self, note: Note) -> None:
        if len(self.notes) < MAX_LISTED:
            self.notes.append(note)

    def summary(self) -> dict[str, Any]:
        """Counts, JSON-ready: the completion event's detail and the task's result."""
        return {"scrub": self.run_id, "seed": self.seed, "sample": self.sample,
                "limit": self.limit, "camera": self.camera, "complete": self.complete,
                "stopped_by": self.stopped_by, "checked": self.checked,
                "bytes_read": self.bytes_read, "mismatches": self.mismatch_count,
                "by_check": {c.value: n for c, n in sorted(self.counts.items())},
                "chain_unchecked": self.chain_unchecked, "removed": self.removed,
                "started_at": self.started_at.isoformat(),
                "finished_at": None if self.finished_at is None
                else self.finished_at.isoformat()}


def validate_sample(sample: float | None) -> None:
    if sample is not None and not 0.0 < sample <= 1.0:
        raise InvalidInput(f"the sample must be a fraction in (0, 1], not {sample}")


def sample_threshold(sample: float) -> int:
    """The bound the sample predicate compares a chunk's 52-bit hash with."""
    validate_sample(sample)
    return round(sample * (1 << _SAMPLE_BITS))


def size_mismatch(*, recorded: int, stored: int) -> str | None:
    if stored == recorded:
        return None
    return f"the object holds {stored} bytes, the catalog recorded {recorded}"


def link_mismatch(*, link: chain.Link, recorded: bytes, prev: bytes) -> str | None:
    """Why ``recorded`` is not the chain hash that follows ``prev`` and ``link``, or None."""
    if chain.chain_hash(prev, link) == recorded:
        return None
    return (f"chain hash does not follow from the predecessor's (seq {link.seq - 1}) and "
            "the chunk's link fields: the row or its predecessor was altered, or a chunk "
            "was inserted or reordered")


def open_failure(exc: crypto.ChunkFormatError | crypto.ChunkTampered) -> Check:
    """Which check a failure to open a sealed object is."""
    if isinstance(exc, crypto.ChunkTampered) and _PLAINTEXT_HASH_FAILURE in str(exc):
        return Check.OBJECT_HASH
    return Check.OBJECT_DECRYPT


# --- selection ------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which chunks a run reads: a sample (None: all) under a seed, of one camera or all."""

    sample: float | None
    seed: str
    camera_id: int | None = None


def sample_page(session: Session, selection: Selection, *, after: tuple[int, int] | None,
                camera_from: int | None = None, camera_below: int | None = None,
                size: int = PAGE_ROWS) -> list[tuple[Chunk, str]]:
    """The next ``size`` selected chunks (with their camera's name) in (camera, seq)
    order after ``after``, among cameras in [camera_from, camera_below).

    The sample is chosen in the database by a seeded hash of the chunk id rather than
    ``TABLESAMPLE`` or ``ORDER BY random()``: it is the same on every page of a run
    (each page is its own short transaction, walked by keyset on the (camera_id, seq)
    unique index), it differs between runs, and it works with the camera filter's index.
    ``TABLESAMPLE BERNOULLI`` draws again on every query (``REPEATABLE`` would scan the
    whole table for every page) and ``random()`` ordering needs one long transaction or
    every selected id held in memory.
    """
    query = (select(Chunk, Camera.name).join(Camera, Camera.id == Chunk.camera_id)
             .order_by(Chunk.camera_id, Chunk.seq).limit(size))
    if selection.camera_id is not None:
        query = query.where(Chunk.camera_id == selection.camera_id)
    if camera_from is not None:
        query = query.where(Chunk.camera_id >= camera_from)
    if camera_below is not None:
        query = query.where(Chunk.camera_id < camera_below)
    if after is not None:
        query = query.where(tuple_(Chunk.camera_id, Chunk.seq) > tuple_(*after))
    if selection.sample is not None:
        query = query.where(_IN_SAMPLE.bindparams(
            seed=selection.seed, threshold=sample_threshold(selection.sample)))
    return [(chunk, name) for chunk, name in session.execute(query)]


def _walk(selection: Selection, start_camera: int | None) -> Iterator[tuple[Chunk, str]]:
    """Every selected chunk, from a camera picked at random to the last, then from the
    first up to it: a run cut short by its limit or time budget covers different
    cameras each day instead of always the first ones."""
    if start_camera is None or selection.camera_id is not None:
        stretches: list[tuple[int | None, int | None]] = [(None, None)]
    else:
        stretches = [(start_camera, None), (None, start_camera)]
    for camera_from, camera_below in stretches:
        after: tuple[int, int] | None = None
        while True:
            with session_scope() as session:
                page = sample_page(session, selection, after=after, camera_from=camera_from,
                                   camera_below=camera_below)
            yield from page
            if len(page) < PAGE_ROWS:
                break
            last = page[-1][0]
            after = (last.camera_id, last.seq)


# --- checking one chunk ---------------------------------------------------------------


def _previous_chain_hash(session: Session, chunk: Chunk) -> bytes | None:
    """The chain hash ``chunk`` must follow from: GENESIS for a camera's first chunk, the
    predecessor's, the retention record's where retention removed the predecessor, or
    None when none of them exists (reported as not checked)."""
    return chain_hash_before(session, camera_id=chunk.camera_id, seq=chunk.seq)


@dataclass
class _Context:
    run_id: str
    store: ObjectStore
    provider: keys.KeyProvider
    workdir: Path
    report: ScrubReport


def _check_key_and_link(ctx: _Context, chunk: Chunk, ref: ChunkRef
                        ) -> tuple[bytes | None, list[tuple[Check, str]]]:
    """Checks 1 and 2; the data key, if it unwrapped, for the object's checks."""
    found: list[tuple[Check, str]] = []
    data_key: bytes | None = None
    with session_scope() as session:
        prev = _previous_chain_hash(session, chunk)
        try:
            data_key = keys.unwrap_data_key(session=session, provider=ctx.provider,
                                            data_key_id=chunk.data_key_id)
        except keys.KeyUnavailable as exc:
            row = session.get(DataKey, chunk.data_key_id)
            destroyed = row is None or row.wrapped is None
            found.append((Check.KEY_DESTROYED if destroyed else Check.KEY_UNWRAP, str(exc)))
    if prev is None:
        ctx.report.chain_unchecked += 1
        ctx.report.add_note(Note(ref, PREDECESSOR_MISSING))
    elif message := link_mismatch(link=link_of(chunk), recorded=chunk.chain_hash, prev=prev):
        found.append((Check.CHAIN_LINK, message))
    return data_key, found


def _check_object(ctx: _Context, chunk: Chunk, data_key: bytes | None
                  ) -> list[tuple[Check, str]]:
    """Checks 3 to 6. Raises StorageError when the object store fails."""
    try:
        stored = ctx.store.stat(chunk.object_key)
    except NotFound as exc:
        return [(Check.OBJECT_MISSING, str(exc))]
    if message := size_mismatch(recorded=chunk.stored_bytes, stored=stored.size_bytes):
        return [(Check.OBJECT_SIZE, message)]
    if data_key is None:
        return []  # the key's failure is reported; without it nothing more can be read
    sealed = ctx.workdir / "object.vglc"
    plain = ctx.workdir / "plaintext"
    try:
        try:
            size = ctx.store.get_file(chunk.object_key, sealed)
        except NotFound as exc:  # deleted between stat and read
            return [(Check.OBJECT_MISSING, str(exc))]
        ctx.report.bytes_read += size
        if message := size_mismatch(recorded=chunk.stored_bytes, stored=size):
            return [(Check.OBJECT_SIZE, message)]
        try:
            crypto.open_sealed_file(sealed, plain, data_key=data_key, slot=slot_of(chunk))
        except (crypto.ChunkFormatError, crypto.ChunkTampered) as exc:
            return [(open_failure(exc), str(exc))]
        return []
    finally:
        sealed.unlink(missing_ok=True)
        plain.unlink(missing_ok=True)


def _still_catalogued(chunk_id: int) -> bool:
    with session_scope() as session:
        return session.get(Chunk, chunk_id) is not None


def _report_mismatch(ctx: _Context, mismatch: Mismatch) -> None:
    ref = mismatch.chunk
    log.error("ALARM integrity scrub %s: camera %s seq %d (%s) fails %s: %s", ctx.run_id,
              ref.camera, ref.seq, ref.object_key, mismatch.check.value, mismatch.message)
    with session_scope() as session:
        audit.record(session=session, actor="system", action="scrub.mismatch",
                     target_type="chunk", target_id=str(ref.chunk_id),
                     detail=mismatch.detail(ctx.run_id))
    ctx.report.add_mismatch(mismatch)


def _scrub_chunk(ctx: _Context, chunk: Chunk, camera: str) -> None:
    ref = ChunkRef(chunk_id=chunk.id, camera=camera, camera_id=chunk.camera_id,
                   seq=chunk.seq, object_key=chunk.object_key)
    data_key, found = _check_key_and_link(ctx, chunk, ref)
    try:
        found += _check_object(ctx, chunk, data_key)
    finally:  # on a StorageError too: what the catalog alone showed is still reported
        if found and not _still_catalogued(chunk.id):
            # The sweeper deleted the row, then the object and the key, while we looked.
            ctx.report.removed += 1
            ctx.report.add_note(Note(ref, REMOVED_DURING_SCRUB))
        else:
            for check, message in found:
                _report_mismatch(ctx, Mismatch(ref, check, message))


# --- a run ----------------------------------------------------------------------------


def _workdir(home: Path, run_id: str) -> Path:
    """A private directory for one run's working files. Plaintext must not linger:
    directories that scrubs which died left behind are removed first."""
    root = home / "work" / "scrub"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in root.glob(f"{_WORKDIR_PREFIX}*"):
        try:
            idle_s = time.time() - stale.stat().st_mtime
        except FileNotFoundError:
            continue
        if idle_s > STALE_WORKDIR_S:
            shutil.rmtree(stale, ignore_errors=True)
    path = root / f"{_WORKDIR_PREFIX}{run_id}"
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


def scrub(*, settings: Settings, sample: float | None = None, limit: int | None = None,
          camera: str | None = None,
          on_progress: Callable[[int, int | None], None] | None = None,
          time_budget_s: float | None = None) -> ScrubReport:
    """Check ``sample`` (a fraction in (0, 1]; None: all) of the stored chunks, of one
    camera or all, at most ``limit`` of them, within ``time_budget_s`` if given.

    ``on_progress(checked, expected)`` is called after each chunk; ``expected`` is the
    number the run should check (for a sample, an estimate). An object-store outage
    stops the run: the report says why (``stopped_by``) and no mismatch is written for it.
    """
    validate_sample(sample)
    if limit is not None and limit < 1:
        raise InvalidInput(f"the limit must be at least 1, not {limit}")
    with session_scope() as session:
        camera_id = None if camera is None else \
            recorder_service.get_camera(session=session, name=camera).id
        count = select(func.count()).select_from(Chunk)
        if camera_id is not None:
            count = count.where(Chunk.camera_id == camera_id)
        total = session.scalar(count) or 0
        start_camera = camera_id if camera_id is not None else session.scalar(
            select(Camera.id).order_by(func.random()).limit(1))
    expected = total if sample is None else math.ceil(total * sample)
    if limit is not None:
        expected = min(expected, limit)
    run_id = secrets.token_hex(8)
    report = ScrubReport(run_id=run_id, seed=secrets.token_hex(8), sample=sample, limit=limit,
                         camera=camera, started_at=datetime.now(UTC))
    ctx = _Context(run_id=run_id, store=get_object_store(settings),
                   provider=keys.file_key_ring(settings.home_dir),
                   workdir=_workdir(settings.home_dir, run_id), report=report)
    deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
    log.info("integrity scrub %s: %s of %d chunk(s)%s", run_id,
             "all" if sample is None else f"a sample of {sample:g}", total,
             "" if camera is None else f" of camera {camera}")
    try:
        for chunk, camera_name in _walk(Selection(sample, report.seed, camera_id),
                                        start_camera):
            if limit is not None and report.checked >= limit:
                break
            if deadline is not None and time.monotonic() > deadline:
                report.stopped_by = f"the time budget of {time_budget_s:g} s ran out"
                break
            try:
                _scrub_chunk(ctx, chunk, camera_name)
            except StorageError as exc:
                report.stopped_by = f"the object store failed: {exc}"
                break
            report.checked += 1
            if on_progress is not None:
                on_progress(report.checked, expected)
    finally:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    report.finished_at = datetime.now(UTC)
    summary = report.summary()
    with session_scope() as session:
        audit.record(session=session, actor="system",
                     action="scrub.completed" if report.complete else "scrub.stopped",
                     target_type="scrub", target_id=run_id, detail=summary)
    if report.complete:
        log.info("integrity scrub %s: %d chunk(s) checked, %d mismatch(es)", run_id,
                 report.checked, report.mismatch_count)
    else:
        log.error("integrity scrub %s stopped after %d chunk(s), %d mismatch(es): %s",
                  run_id, report.checked, report.mismatch_count, report.stopped_by)
    return report


def scheduled_scrub(*, settings: Settings) -> dict[str, Any]:
    """The daily run (Celery task ``vigil.retention.scrub``): a ``settings.scrub_sample``
    fraction of all chunks, within SCHEDULED_BUDGET_S; returns the report's counts."""
    return scrub(settings=settings, sample=settings.scrub_sample,
                 time_budget_s=SCHEDULED_BUDGET_S).summary()
