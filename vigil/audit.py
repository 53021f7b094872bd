"""The audit trail: append-only, hash-chained events of who did what.

Each event's hash covers the previous event's hash and the event's own fields in
canonical JSON, so that changing, removing or reordering any event breaks every
hash after it. The database refuses UPDATE, DELETE and TRUNCATE on the table
(migration 0001), and appends are serialised by a transaction-scoped advisory
lock so that the chain has exactly one head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from vigil.catalog.models import AuditEvent
from vigil.errors import IntegrityError

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
