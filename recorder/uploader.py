"""The uploader: drains the spool's outbox into the object store and the catalog.

For each entry, in per-camera order: store the object and verify it (``put`` reads
it back), commit the catalog rows, and only then remove the spool files (storage
invariants I1, I2; docs/design/storage.md W3-W6). An outage of S3 or PostgreSQL
stops the drain at the entry that failed; recording goes on into the spool, and the
drain resumes, in order, when the service is back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from recorder import service
from recorder.spool import PendingChunk, PendingGap, Spool
from vigil import keys
from vigil.db import session_scope
from vigil.errors import IntegrityError, StorageError
from vigil.objectstore import ObjectStore

log = logging.getLogger("vigil.recorder.uploader")

BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 15.0
IDLE_POLL_S: Final = 0.5


@dataclass
class DrainResult:
    committed: int = 0
    quarantined: int = 0
    error: str | None = None


def drain_once(*, spool: Spool, store: ObjectStore, engine: Engine) -> DrainResult:
    """Upload and commit every outbox entry, in order, until one fails."""
    result = DrainResult()
    for entry in spool.pending():
        try:
            if isinstance(entry, PendingChunk):
                blob = spool.blob_path(entry)
                if not blob.exists():
                    raise StorageError(f"spool entry {entry.name} lost its sealed file")
                store.put_file(entry.object_key, blob, sha256_hex=entry.stored_sha256)
                with session_scope(engine) as session:
                    service.commit_chunk(session=session, pending=entry)
            else:
                assert isinstance(entry, PendingGap)
                with session_scope(engine) as session:
                    service.commit_gap(session=session, gap=entry)
        except StorageError as exc:
            result.error = f"object store: {exc}"
            return result
        except (OperationalError, InterfaceError) as exc:  # unreachable: retry later
            result.error = f"database: {type(exc.orig).__name__ if exc.orig else exc}"
            return result
        except (IntegrityError, DBAPIError) as exc:
            # Refused for good (a chain conflict, a broken constraint): set it aside
            # with the reason, loudly, and go on with the entries behind it.
            reason = str(exc) if isinstance(exc, IntegrityError) else (
                f"{type(exc.orig).__name__}: {exc.orig}" if exc.orig else str(exc))
            log.error("ALARM spool entry %s refused by the catalog and quarantined: %s",
                      entry.name, reason.splitlines()[0])
            spool.quarantine(entry, reason)
            result.quarantined += 1
            continue
        spool.remove(entry)
        result.committed += 1
    return result


class Uploader(threading.Thread):
    """Drains the outbox continuously, backing off exponentially while it fails;
    also signs chain checkpoints after commits."""

    def __init__(self, *, spool: Spool, store: ObjectStore, engine: Engine,
                 provider: keys.KeyProvider) -> None:
        super().__init__(name="uploader", daemon=True)
        self._spool, self._store, self._engine = spool, store, engine
        self._provider = provider
        self.last_error: str | None = None
        self.committed = 0
        self._final = threading.Event()

    def finish(self) -> None:
        """Make one last drain attempt, then stop (after the cameras have stopped)."""
        self._final.set()

    def run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            final = self._final.is_set()
            result = drain_once(spool=self._spool, store=self._store, engine=self._engine)
            self.committed += result.committed
            if result.committed:
                self._checkpoint()
            if result.error is not None:
                if result.error != self.last_error:
                    log.warning("upload paused: %s; %d entries wait in the spool",
                                result.error, len(self._spool.pending()))
                self.last_error = result.error
                if final or self._final.wait(backoff):
                    return  # what is left stays in the spool for the next start
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if self.last_error is not None:
                log.info("upload resumed")
            self.last_error, backoff = None, BACKOFF_FIRST_S
            if final:
                return
            self._final.wait(IDLE_POLL_S)

    def _checkpoint(self) -> None:
        try:
            with session_scope(self._engine) as session:
                service.sign_checkpoints(session=session, provider=self._provider)
        except (OperationalError, DBAPIError) as exc:
            log.warning("checkpoint signing deferred: %s", type(exc).__name__)
