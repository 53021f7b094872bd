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
from datetime import UTC, datetime
from typing import Final, Literal

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from retention.service import holds_chunks
from vigil import audit
from vigil.catalog.models import AuditEvent, Hold
from vigil.db import session_scope
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
    hold *that placed legal holds* covers (an unreleased hold that never locked would
    never lift them); returns how many."""
    keys = session.scalars(text("""
        SELECT c.object_key FROM chunks c
         WHERE c.camera_id = :camera AND c.start_at < :end AND c.end_at > :start
           AND NOT EXISTS (SELECT 1 FROM holds h
                            WHERE h.camera_id = c.camera_id AND h.id <> :hold
                              AND h.locked_at IS NOT NULL AND h.unlocked_at IS NULL
                              AND h.released_at IS NULL
                              AND h.start_at < c.end_at AND h.end_at > c.start_at)
         ORDER BY c.seq"""), {"camera": hold.camera_id, "start": hold.start_at,
                              "end": hold.end_at, "hold": hold.id}).all()
    for key in keys:
        store.set_legal_hold(key, on=False)
    return len(keys)


def sync_legal_holds(*, settings: Settings, store: ObjectStore) -> dict[str, int]:
    """Bring the objects' legal holds in line with the catalog's holds: placed for
    unreleased holds (when the store enforces them and VIGIL_OBJECT_LOCK is auto),
    lifted for released ones that placed them. One hold per transaction; an outage
    leaves the rest for the next run (the beat schedule), nothing half-recorded: a
    hold is marked only after all its objects were done, and each call is idempotent.
    """
    with session_scope() as session:
        on = legal_holds_on(session, settings)
        to_lock = session.scalars(select(Hold.id).where(
            Hold.released_at.is_(None), Hold.locked_at.is_(None))).all() if on else []
        to_lift = session.scalars(select(Hold.id).where(
            Hold.released_at.is_not(None), Hold.locked_at.is_not(None),
            Hold.unlocked_at.is_(None))).all()
    counts = {"locked_holds": 0, "locked_objects": 0, "lifted_holds": 0, "lifted_objects": 0}
    for hold_id in to_lock:
        with session_scope() as session:
            hold = session.get(Hold, hold_id, with_for_update=True)
            if hold is None or hold.released_at is not None or hold.locked_at is not None:
                continue
            counts["locked_objects"] += apply(session=session, store=store, hold=hold)
            hold.locked_at = datetime.now(UTC)
            counts["locked_holds"] += 1
    for hold_id in to_lift:
        with session_scope() as session:
            hold = session.get(Hold, hold_id, with_for_update=True)
            if hold is None or hold.unlocked_at is not None:
                continue
            counts["lifted_objects"] += lift(session=session, store=store, hold=hold)
            hold.unlocked_at = datetime.now(UTC)
            counts["lifted_holds"] += 1
    return counts
