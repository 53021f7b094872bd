"""What the object store really enforces (the WORM probe), and S3 legal holds for
evidence holds where it does.

The probe writes a canary object, puts a legal hold on it, and tries to delete it:
a store that deletes it anyway only pretends to support object lock (several
S3-compatible servers accept the calls and enforce nothing). The result is recorded
as an audit event (``storage.worm_probe``) and read back from there; holds become
object legal holds only while the latest probe found them enforced and
``VIGIL_OBJECT_LOCK`` is ``auto``. Catalog holds protect footage from Vigil's own
sweeper either way; legal holds add protection from whoever holds the storage
credentials.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from retention.service import holds_chunks
from vigil import audit
from vigil.catalog.models import AuditEvent, Hold
from vigil.errors import StorageError
from vigil.objectstore import ObjectStore
from vigil.settings import Settings

log = logging.getLogger("vigil.retention")

PROBE_PREFIX: Final = "probes/"
Verdict = Literal["enforced", "not enforced", "unsupported"]


@dataclass(frozen=True)
class WormState:
    legal_hold: Verdict
    detail: str
    probed_at: datetime | None = None


def probe(store: ObjectStore) -> WormState:
    """Lock a canary, try to delete it, clean up. Raises StorageError for an outage."""
    key = f"{PROBE_PREFIX}worm-{secrets.token_hex(8)}"
    store.put(key, b"vigil worm probe\n")
    try:
        try:
            store.set_legal_hold(key, on=True)
        except StorageError as exc:
            return WormState("unsupported", f"the store refused a legal hold: {exc}")
        refused = store.delete_many([key])
        if refused:
            return WormState("enforced", f"a delete of a version under legal hold was "
                                         f"refused ({refused[key]})")
        return WormState("not enforced", "a version under legal hold was deleted: the "
                                         "store accepts object lock calls but does not "
                                         "enforce them")
    finally:
        try:
            store.set_legal_hold(key, on=False)
        except StorageError:
            pass  # gone already, or holds unsupported
        store.delete_many([key])


def record(*, session: Session, state: WormState) -> None:
    log_line = log.info if state.legal_hold == "enforced" else log.warning
    log_line("WORM probe: legal holds %s (%s)", state.legal_hold, state.detail)
    audit.record(session=session, actor="system", action="storage.worm_probe",
                 target_type="storage", target_id="s3",
                 detail={"legal_hold": state.legal_hold, "detail": state.detail})


def latest(session: Session) -> WormState | None:
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "storage.worm_probe")
                            .order_by(AuditEvent.id.desc()).limit(1)).first()
    if event is None:
        return None
    return WormState(legal_hold=event.detail["legal_hold"], detail=event.detail["detail"],
                     probed_at=event.occurred_at)


def legal_holds_on(session: Session, settings: Settings) -> bool:
    state = latest(session)
    return settings.object_lock == "auto" and state is not None and \
        state.legal_hold == "enforced"


def apply(*, session: Session, store: ObjectStore, hold: Hold) -> int:
    """Put a legal hold on every object the hold covers; returns how many."""
    keys = holds_chunks(session, hold)
    for key in keys:
        store.set_legal_hold(key, on=True)
    return len(keys)


def lift(*, session: Session, store: ObjectStore, hold: Hold) -> int:
    """Take the legal hold off the objects of a released hold that no other unreleased
    hold covers; returns how many."""
    keys = session.scalars(text("""
        SELECT c.object_key FROM chunks c
         WHERE c.camera_id = :camera AND c.start_at < :end AND c.end_at > :start
           AND NOT EXISTS (SELECT 1 FROM holds h
                            WHERE h.camera_id = c.camera_id AND h.released_at IS NULL
                              AND h.id <> :hold
                              AND h.start_at < c.end_at AND h.end_at > c.start_at)
         ORDER BY c.seq"""), {"camera": hold.camera_id, "start": hold.start_at,
                              "end": hold.end_at, "hold": hold.id}).all()
    for key in keys:
        store.set_legal_hold(key, on=False)
    return len(keys)
