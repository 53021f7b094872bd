"""The local spool: where footage waits until the catalog has it.

Layout under ``<home>/spool/``:

* ``active/<camera>-<seq>.mov`` and ``.json``: the chunk being written and what is
  known of it at its start (camera, seq, run anchor). Fsync'ed every second.
* ``outbox/<camera>-<seq>.vch`` and ``.json``: a sealed chunk and everything its
  catalog row needs, or ``outbox/<camera>-gap-<start>.json``: a gap to record.

Every file enters the outbox by write-to-temporary, fsync, rename, fsync of the
directory, so an entry is either whole or absent. An entry leaves the outbox only
after its catalog row is committed (storage invariant I2).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from vigil.files import fsync_dir, write_private

SIDECAR_VERSION: Final = 1
# How stale the spool's size may be when a camera asks whether it may start a chunk.
ROOM_CHECK_INTERVAL_S: Final = 1.0


@dataclass(frozen=True)
class ActiveChunk:
    """What is known of a chunk when it starts being written."""

    camera_id: int
    seq: int
    prev_chain_hash: str  # hex
    anchor_us: int  # the run's wall-clock anchor, for this chunk's start
    clock_source: str
    first_of_run: bool


@dataclass(frozen=True)
class PendingChunk:
    """A sealed chunk in the outbox: the catalog row it becomes, and its wrapped key."""

    camera_id: int
    seq: int
    start_us: int
    end_us: int
    media_duration_us: int
    clock_source: str
    plaintext_bytes: int
    stored_bytes: int
    sha256: str  # hex, plaintext
    prev_chain_hash: str  # hex
    chain_hash: str  # hex
    object_key: str
    kek_id: int
    wrapped_key: str  # hex
    stored_sha256: str = ""  # hex, of the sealed object's bytes
    codec: dict[str, Any] = field(default_factory=dict)
    kind: str = "chunk"

    @property
    def name(self) -> str:
        return f"{self.camera_id:08d}-{self.seq:020d}"


@dataclass(frozen=True)
class PendingGap:
    camera_id: int
    start_us: int
    end_us: int
    cause: str
    detail: str = ""
    kind: str = "gap"

    @property
    def name(self) -> str:
        return f"{self.camera_id:08d}-gap-{self.start_us:020d}"


class Spool:
    def __init__(self, root: Path, *, budget_bytes: int) -> None:
        self.root = root
        self.active_dir = root / "active"
        self.outbox_dir = root / "outbox"
        self.quarantine_dir = root / "quarantine"
        self.budget_bytes = budget_bytes
        self._room_lock = threading.Lock()
        self._room = True
        self._room_checked_at = float("-inf")
        # Private: active chunks are plaintext until sealed (at most one per camera).
        for d in (root, self.active_dir, self.outbox_dir, self.quarantine_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)

    # --- active chunks ---------------------------------------------------------------

    def active_paths(self, camera_id: int, seq: int) -> tuple[Path, Path]:
        stem = f"{camera_id:08d}-{seq:020d}"
        return self.active_dir / f"{stem}.mov", self.active_dir / f"{stem}.json"

    def start_active(self, info: ActiveChunk) -> Path:
        media, meta = self.active_paths(info.camera_id, info.seq)
        write_private(meta, json.dumps(asdict(info)).encode())
        fsync_dir(self.active_dir)
        return media

    def active_chunks(self) -> list[tuple[ActiveChunk, Path]]:
        """Chunks a previous process was writing when it stopped (for recovery)."""
        found = []
        for meta in sorted(self.active_dir.glob("*.json")):
            info = ActiveChunk(**json.loads(meta.read_text()))
            found.append((info, meta.with_suffix(".mov")))
        return found

    def drop_active(self, camera_id: int, seq: int) -> None:
        for path in self.active_paths(camera_id, seq):
            path.unlink(missing_ok=True)
        fsync_dir(self.active_dir)

    # --- outbox ----------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes in the spool. Other threads add and remove files meanwhile: a file
        that vanishes between listing and stat simply no longer counts."""
        total = 0
        for d in (self.active_dir, self.outbox_dir, self.quarantine_dir):
            with os.scandir(d) as entries:
                for entry in entries:
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:
                        continue
        return total

    def has_room(self) -> bool:
        """Whether the spool is under its budget; measured at most once per
        ``ROOM_CHECK_INTERVAL_S`` for all cameras together."""
        now = time.monotonic()
        with self._room_lock:
            if now - self._room_checked_at >= ROOM_CHECK_INTERVAL_S:
                self._room = self.used_bytes() < self.budget_bytes
                self._room_checked_at = now
            return self._room

    def sealing_path(self, camera_id: int, seq: int) -> Path:
        """Where a chunk is sealed to before it enters the outbox (``add_chunk``)."""
        return self.outbox_dir / f"{camera_id:08d}-{seq:020d}.vch.tmp"

    def blob_path(self, pending: PendingChunk) -> Path:
        return self.outbox_dir / f"{pending.name}.vch"

    def add_chunk(self, pending: PendingChunk) -> None:
        """Put a chunk sealed (and fsync'ed) at ``sealing_path`` into the outbox: the
        sealed file first, then the sidecar that makes it an entry; a crash between
        the two leaves a file with no entry, which ``clean`` removes after its active
        source was re-sealed."""
        os.replace(self.sealing_path(pending.camera_id, pending.seq), self.blob_path(pending))
        write_private(self.outbox_dir / f"{pending.name}.json",
                       json.dumps({"v": SIDECAR_VERSION, **asdict(pending)}).encode())
        fsync_dir(self.outbox_dir)

    def add_gap(self, gap: PendingGap) -> None:
        write_private(self.outbox_dir / f"{gap.name}.json",
                       json.dumps({"v": SIDECAR_VERSION, **asdict(gap)}).encode())
        fsync_dir(self.outbox_dir)

    def pending(self) -> list[PendingChunk | PendingGap]:
        """Outbox entries in commit order: per camera, by time."""
        entries: list[PendingChunk | PendingGap] = []
        for meta in self.outbox_dir.glob("*.json"):
            raw = json.loads(meta.read_text())
            raw.pop("v", None)
            entries.append(PendingGap(**raw) if raw["kind"] == "gap" else PendingChunk(**raw))
        return sorted(entries, key=lambda e: (e.camera_id, e.start_us, e.kind == "chunk"))


    def remove(self, entry: PendingChunk | PendingGap) -> None:
        """Called only after the entry's catalog row is committed (invariant I2)."""
        (self.outbox_dir / f"{entry.name}.json").unlink(missing_ok=True)
        (self.outbox_dir / f"{entry.name}.vch").unlink(missing_ok=True)
        fsync_dir(self.outbox_dir)

    def quarantine(self, entry: PendingChunk | PendingGap, reason: str) -> None:
        """Set aside an entry the catalog refuses (a chain conflict, a row that breaks
        a constraint), so that it neither blocks the entries behind it nor is lost.
        The reason is kept beside it for the operator."""
        for suffix in (".vch", ".json"):
            src = self.outbox_dir / f"{entry.name}{suffix}"
            if src.exists():
                os.replace(src, self.quarantine_dir / src.name)
        write_private(self.quarantine_dir / f"{entry.name}.reason", reason.encode())
        fsync_dir(self.quarantine_dir)
        fsync_dir(self.outbox_dir)

    def quarantined(self) -> list[str]:
        return sorted(p.stem for p in self.quarantine_dir.glob("*.reason"))

    def clean(self) -> None:
        """Remove temporaries and sealed blobs that never got their sidecar."""
        for tmp in self.root.rglob("*.tmp"):
            tmp.unlink(missing_ok=True)
        for blob in self.outbox_dir.glob("*.vch"):
            if not blob.with_suffix(".json").exists():
                blob.unlink()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
