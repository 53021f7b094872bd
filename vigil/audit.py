"""The audit trail: append-only, hash-chained events of who did what.

Each event's hash covers the previous event's hash and the event's own fields in
canonical JSON, so that changing, removing or reordering any event breaks every
hash after it. The database refuses UPDATE, DELETE and TRUNCATE on the table
(migration 0001), and appends are serialised by a transaction-scoped advisory
lock so that the chain has exactly one head.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from vigil.catalog.models import AuditEvent
from vigil.errors import IntegrityError, InvalidInput

GENESIS: Final = bytes(32)
# pg_advisory_xact_lock key that serialises appends ("vigil-audit" as an int).
_APPEND_LOCK: Final = 0x76_69_67_69_6C_61_75


class AuditChainBroken(IntegrityError):
    """An audit event's hash or link does not match: the trail was altered."""

    code = "audit_chain_broken"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def event_digest(*, prev_hash: bytes, occurred_at: datetime, actor: str, action: str,
                 target_type: str | None, target_id: str | None,
                 detail: dict[str, Any]) -> bytes:
    when = occurred_at.astimezone(UTC).isoformat(timespec="microseconds")
    body = canonical({"occurred_at": when, "actor": actor, "action": action,
                      "target_type": target_type, "target_id": target_id, "detail": detail})
    return hashlib.sha256(prev_hash + body).digest()


def record(*, session: Session, actor: str, action: str, principal_id: int | None = None,
           target_type: str | None = None, target_id: str | None = None,
           detail: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event. Flushes; the caller's transaction commits it with its work."""
    detail = json.loads(canonical(detail or {}))  # what is hashed is what is stored
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK})
    head = session.scalars(
        select(AuditEvent.event_hash).order_by(AuditEvent.id.desc()).limit(1)).first()
    prev_hash = head if head is not None else GENESIS
    # Microsecond precision, as timestamptz stores it, so the hash re-computes.
    occurred_at = datetime.now(UTC)
    fields: dict[str, Any] = {"occurred_at": occurred_at, "actor": actor, "action": action,
                              "target_type": target_type, "target_id": target_id,
                              "detail": detail}
    event = AuditEvent(principal_id=principal_id, prev_hash=prev_hash,
                       event_hash=event_digest(prev_hash=prev_hash, **fields), **fields)
    session.add(event)
    session.flush()
    return event


def verify_chain(events: Iterable[AuditEvent], *, prev_hash: bytes = GENESIS) -> int:
    """Check that ``events`` (in id order) form an unbroken chain from ``prev_hash``.

    Returns the number of events checked; raises AuditChainBroken at the first
    event whose link or hash is wrong.
    """
    count = 0
    for event in events:
        if event.prev_hash != prev_hash:
            raise AuditChainBroken(f"audit event {event.id}: does not link to the event "
                                   "before it (an event was removed, inserted or reordered)")
        expected = event_digest(prev_hash=event.prev_hash, occurred_at=event.occurred_at,
                                actor=event.actor,
                                action=event.action, target_type=event.target_type,
                                target_id=event.target_id, detail=event.detail)
        if event.event_hash != expected:
            raise AuditChainBroken(f"audit event {event.id}: content does not match its "
                                   "hash (the event was altered)")
        prev_hash = event.event_hash
        count += 1
    return count


# Events read per query when the whole stored trail is checked or exported: memory
# stays flat however long the trail.
READ_BATCH: Final = 5000


@dataclass(frozen=True)
class TrailCheck:
    """What checking the stored trail found: ``failure`` is None when it is intact."""

    events: int  # checked before the first failure (all, when intact)
    head: str | None  # hex hash of the last event checked
    failure: str | None


def stored_events(session: Session, *, start: datetime | None = None,
                  end: datetime | None = None) -> Iterator[AuditEvent]:
    """The stored events in id order (chain order), optionally those that occurred in
    ``[start, end)``, read in batches."""
    last_id = 0
    while True:
        query = select(AuditEvent).where(AuditEvent.id > last_id)
        if start is not None:
            query = query.where(AuditEvent.occurred_at >= start)
        if end is not None:
            query = query.where(AuditEvent.occurred_at < end)
        batch = session.scalars(query.order_by(AuditEvent.id).limit(READ_BATCH)).all()
        if not batch:
            return
        last_id = batch[-1].id
        for event in batch:
            yield event
            session.expunge(event)


def check_stored(session: Session) -> TrailCheck:
    """Check the whole stored trail from GENESIS (``verify_chain``, batch by batch)."""
    count, prev, head = 0, GENESIS, None
    try:
        for event in stored_events(session):
            count += verify_chain([event], prev_hash=prev)
            prev = event.event_hash
            head = prev.hex()
    except AuditChainBroken as exc:
        return TrailCheck(events=count, head=head, failure=str(exc))
    return TrailCheck(events=count, head=head, failure=None)


EXPORT_FIELDS: Final = ("id", "occurred_at", "actor", "action", "target_type", "target_id",
                        "detail", "prev_hash", "event_hash")


def export_row(event: AuditEvent) -> dict[str, Any]:
    """An event as exported: every hashed field as stored, hashes in hex, so that an
    export re-computes (``event_digest``) without the database."""
    return {"id": event.id,
            "occurred_at": event.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": event.actor, "action": event.action, "target_type": event.target_type,
            "target_id": event.target_id, "detail": event.detail,
            "prev_hash": event.prev_hash.hex(), "event_hash": event.event_hash.hex()}


def export_lines(events: Iterable[AuditEvent], *, fmt: str) -> Iterator[str]:
    """JSON lines, or CSV with a header row (``detail`` as canonical JSON)."""
    if fmt == "jsonl":
        for event in events:
            yield canonical(export_row(event)).decode() + "\n"
        return
    if fmt != "csv":
        raise InvalidInput(f"unknown export format {fmt!r} (jsonl or csv)")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    for event in events:
        row = export_row(event)
        row["detail"] = canonical(row["detail"]).decode()
        writer.writerow([row[f] for f in EXPORT_FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
