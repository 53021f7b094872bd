"""The audit trail: append-only, hash-chained events of who did what, and signed
checkpoints of its head.

Each event's hash covers the previous event's hash and the event's own fields in
canonical JSON, so that changing, removing or reordering any event breaks every
hash after it. The database refuses UPDATE, DELETE and TRUNCATE on the table
(migration 0001), and appends are serialised by a transaction-scoped advisory
lock so that the chain has exactly one head.

A chain alone cannot show that its end was cut off: what is left is still a valid
chain. So the head is signed periodically (``sign_checkpoint``, Ed25519 under the
``audit_signing`` key): a checkpoint names the last event, its hash and how many
events the trail holds up to it, and a copy of it is kept in the object store,
outside the database. ``verify_stored`` checks the chain, every checkpoint and every
copy (docs/design/audit.md).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from vigil import keys
from vigil.catalog.models import AuditCheckpoint, AuditEvent, Key, KeyPurpose, KeyState
from vigil.chain import fingerprint
from vigil.errors import ConfigurationError, IntegrityError, InvalidInput, NotFound
from vigil.objectstore import ObjectStore

GENESIS: Final = bytes(32)
# pg_advisory_xact_lock key that serialises appends ("vigil-audit" as an int).
_APPEND_LOCK: Final = 0x76_69_67_69_6C_61_75

# The signed statement: this domain, then canonical JSON of Statement's fields.
CHECKPOINT_FORMAT: Final = "vigil-audit-checkpoint-v1"
_CHECKPOINT_DOMAIN: Final = CHECKPOINT_FORMAT.encode() + b"\x00"
# Where the copies of checkpoints live in the object store: one object per checkpoint,
# named by its zero-padded id so that a listing comes in id order.
COPY_PREFIX: Final = "audit/checkpoints/"
_COPY_NAME: Final = re.compile(re.escape(COPY_PREFIX) + r"(\d{12})\.json")
# The newest checkpoint's copy is written after its row commits (audit.md, P4). A row
# with no copy is tampering unless it is the newest and younger than this: two runs of
# the checkpoint task (every 600 s), the second of which stores a copy the first could
# not (P1).
COPY_GRACE: Final = timedelta(minutes=20)
# Copies read at once while verifying: the store answers each GET in milliseconds, and
# a year of checkpoints every ten minutes is ~50,000 of them.
COPY_READERS: Final = 8

FailureKind = Literal["altered", "removed", "inserted", "reordered", "truncated",
                      "checkpoint_missing", "checkpoint_altered"]


class AuditChainBroken(IntegrityError):
    """The audit trail or one of its checkpoints does not check: ``kind`` says how."""

    code = "audit_chain_broken"

    def __init__(self, message: str, *, kind: FailureKind = "altered") -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


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


def _lock_appends(session: Session) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK})


def record(*, session: Session, actor: str, action: str, principal_id: int | None = None,
           target_type: str | None = None, target_id: str | None = None,
           detail: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event. Flushes; the caller's transaction commits it with its work."""
    detail = json.loads(canonical(detail or {}))  # what is hashed is what is stored
    _lock_appends(session)
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


# --- the chain -----------------------------------------------------------------------

# Given a hash, the id of the stored event that has it (or None): lets a broken link
# be told apart as removed, inserted or reordered.
Locate = Callable[[bytes], int | None]


def _link_broken(event: Any, locate: Locate | None) -> AuditChainBroken:
    base = f"audit event #{event.id}: does not link to the event before it"
    if locate is None:
        return AuditChainBroken(f"{base} (an event was removed, inserted or reordered)",
                                kind="removed")
    found = locate(event.prev_hash)
    if found is None:
        return AuditChainBroken(
            f"{base}: the event it links to (hash {event.prev_hash.hex()[:16]}…) is not in "
            "the trail, so events were removed before it (or the event before it was "
            "altered and re-hashed)", kind="removed")
    if found > event.id:
        return AuditChainBroken(f"{base}: it links to event #{found}, which is stored after "
                                "it (events were reordered)", kind="reordered")
    return AuditChainBroken(f"{base}: it links to event #{found}, stored earlier, so the "
                            f"events after #{found} and before #{event.id} were inserted or "
                            "moved there", kind="inserted")


def verify_chain(events: Iterable[Any], *, prev_hash: bytes = GENESIS,
                 locate: Locate | None = None) -> int:
    """Check that ``events`` (in id order; ``AuditEvent`` rows or anything with their
    fields) form an unbroken chain from ``prev_hash``.

    Returns the number of events checked; raises AuditChainBroken at the first event
    whose link or hash is wrong (with ``locate``, a broken link is classified).
    """
    count = 0
    for event in events:
        if event.prev_hash != prev_hash:
            raise _link_broken(event, locate)
        expected = event_digest(prev_hash=event.prev_hash, occurred_at=event.occurred_at,
                                actor=event.actor,
                                action=event.action, target_type=event.target_type,
                                target_id=event.target_id, detail=event.detail)
        if event.event_hash != expected:
            raise AuditChainBroken(f"audit event #{event.id}: content does not match its "
                                   "hash (the event was altered)", kind="altered")
        prev_hash = event.event_hash
        count += 1
    return count


# Events read per query when the whole stored trail is checked or exported: memory
# stays flat however long the trail.
READ_BATCH: Final = 5000


def stored_events(session: Session, *, start: datetime | None = None,
                  end: datetime | None = None, after_id: int = 0) -> Iterator[AuditEvent]:
    """The stored events in id order (chain order), optionally those that occurred in
    ``[start, end)`` or come after event ``after_id``, read in batches."""
    last_id = after_id
    while True:
        query = select(AuditEvent).where(AuditEvent.id > last_id)
        if start is not None:
            query = query.where(AuditEvent.occurred_at >= start)
        if end is not None:
            query = query.where(AuditEvent.occurred_at < end)
        # populate_existing: what the database holds now, never a copy held in memory
        batch = session.scalars(query.order_by(AuditEvent.id).limit(READ_BATCH)
                                .execution_options(populate_existing=True)).all()
        if not batch:
            return
        last_id = batch[-1].id
        for event in batch:
            yield event
            session.expunge(event)


def _locate(session: Session, event_hash: bytes) -> int | None:
    return session.scalars(select(AuditEvent.id)
                           .where(AuditEvent.event_hash == event_hash)).first()


# --- checkpoints: the statement, its record, its copy ------------------------------------


@dataclass(frozen=True)
class Statement:
    """What a checkpoint signs: the trail's head at ``signed_at_us``."""

    event_id: int  # the last event covered
    event_hash: bytes
    events: int  # how many events the trail holds up to and including event_id
    signed_at_us: int  # microseconds since the Unix epoch, UTC
    key_fingerprint: str  # hex SHA-256 of the raw public key

    def message(self) -> bytes:
        return _CHECKPOINT_DOMAIN + canonical({
            "event_hash": self.event_hash.hex(), "event_id": self.event_id,
            "events": self.events, "key_fingerprint": self.key_fingerprint,
            "signed_at_us": self.signed_at_us})


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(at: datetime) -> int:
    """Microseconds since the Unix epoch (``vigil.chunks.to_us``, which imports keys,
    which imports this module)."""
    return (at - _EPOCH) // timedelta(microseconds=1)


def _when(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _us_when(us: int) -> str:
    return _when(_EPOCH + timedelta(microseconds=us))


def _describe(checkpoint_id: int, statement: Statement) -> str:
    return (f"checkpoint #{checkpoint_id} (signed {_us_when(statement.signed_at_us)}, "
            f"covers event #{statement.event_id})")


def statement_of(checkpoint: AuditCheckpoint, *, key_fingerprint: str) -> Statement:
    return Statement(event_id=checkpoint.event_id, event_hash=checkpoint.event_hash,
                     events=checkpoint.events, signed_at_us=to_us(checkpoint.signed_at),
                     key_fingerprint=key_fingerprint)


def checkpoint_record(checkpoint: AuditCheckpoint, *, key_fingerprint: str
                      ) -> dict[str, Any]:
    """A checkpoint as its copy in the object store, the export and the API carry it:
    the statement's fields, the checkpoint's id and the signature, hashes in hex."""
    return {"format": CHECKPOINT_FORMAT, "checkpoint_id": checkpoint.id,
            "event_id": checkpoint.event_id, "event_hash": checkpoint.event_hash.hex(),
            "events": checkpoint.events, "signed_at_us": to_us(checkpoint.signed_at),
            "key_fingerprint": key_fingerprint, "signature": checkpoint.signature.hex()}


def parse_record(value: Any, *, what: str) -> tuple[int, Statement, bytes]:
    """``(checkpoint id, statement, signature)`` from a record (``checkpoint_record``);
    AuditChainBroken (``checkpoint_altered``) for anything malformed."""
    try:
        if not isinstance(value, dict) or value.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a {CHECKPOINT_FORMAT} record")
        ints = [value[k] for k in ("checkpoint_id", "event_id", "events", "signed_at_us")]
        if not all(type(v) is int for v in ints):
            raise ValueError("an id, count or time is not an integer")
        event_hash, signature = bytes.fromhex(value["event_hash"]), \
            bytes.fromhex(value["signature"])
        fp = value["key_fingerprint"]
        if len(event_hash) != 32 or len(signature) != 64 or not isinstance(fp, str) \
                or len(bytes.fromhex(fp)) != 32:
            raise ValueError("a hash, fingerprint or signature has the wrong length")
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditChainBroken(f"{what} is not a well-formed checkpoint record: {exc}",
                               kind="checkpoint_altered") from None
    checkpoint_id, event_id, events, signed_at_us = ints
    return checkpoint_id, Statement(event_id=event_id, event_hash=event_hash, events=events,
                                    signed_at_us=signed_at_us, key_fingerprint=fp), signature


def check_signature(statement: Statement, signature: bytes, public_key: Ed25519PublicKey,
                    *, what: str) -> None:
    """Raise AuditChainBroken (``checkpoint_altered``) unless ``signature`` is the key's
    over ``statement`` and the statement names that key."""
    if fingerprint(public_key) != statement.key_fingerprint:
        raise AuditChainBroken(f"{what} names key {statement.key_fingerprint[:16]}…, not "
                               "the key it is checked with", kind="checkpoint_altered")
    try:
        public_key.verify(signature, statement.message())
    except InvalidSignature:
        raise AuditChainBroken(f"{what}: its signature does not verify under key "
                               f"{statement.key_fingerprint[:16]}… (the checkpoint was "
                               "altered)", kind="checkpoint_altered") from None


def copy_name(checkpoint_id: int) -> str:
    return f"{COPY_PREFIX}{checkpoint_id:012d}.json"


def store_copy(*, store: ObjectStore, record: dict[str, Any], hold: bool) -> str:
    """Store a checkpoint's record (``checkpoint_record``) as its copy; put an S3 legal
    hold on it when ``hold``. Idempotent; a different copy already stored under its id
    is never replaced (it is evidence: the catalog was restored or altered) and raises
    AuditChainBroken. Returns the object key."""
    name = copy_name(record["checkpoint_id"])
    blob = canonical(record) + b"\n"
    try:
        existing = store.get(name)
    except NotFound:
        store.put(name, blob)  # read back and compared by the store
    else:
        if existing != blob:
            raise AuditChainBroken(
                f"the object store already holds a different copy of checkpoint "
                f"#{record['checkpoint_id']} ({name}): the catalog was restored from an "
                "earlier state or the checkpoint was replaced; the copy is kept",
                kind="checkpoint_altered")
    if hold:
        store.set_legal_hold(name, on=True)
    return name


def _fingerprints(session: Session) -> dict[int, tuple[str, Ed25519PublicKey]]:
    """Audit signing key id -> (fingerprint, public key), every version and state, the
    catalog's fingerprint checked against the public key it stores."""
    out: dict[int, tuple[str, Ed25519PublicKey]] = {}
    for key in session.scalars(select(Key).where(Key.purpose == KeyPurpose.AUDIT_SIGNING)
                               .execution_options(populate_existing=True)):
        if key.public_key is None or key.fingerprint != \
                hashlib.sha256(key.public_key).hexdigest():
            raise AuditChainBroken(f"audit signing key version {key.version}: its "
                                   "fingerprint does not match its public key (the keys "
                                   "table was altered)", kind="checkpoint_altered")
        out[key.id] = (key.fingerprint, keys.load_public(key.public_key))
    return out


def checkpoint_records(*, session: Session, after: int = 0, limit: int | None = None,
                       first_event_id: int | None = None, last_event_id: int | None = None
                       ) -> list[dict[str, Any]]:
    """Checkpoint records in id order: those after checkpoint ``after``, optionally only
    those covering an event in ``[first_event_id, last_event_id]``."""
    query = select(AuditCheckpoint, Key.fingerprint).join(
        Key, Key.id == AuditCheckpoint.key_id).where(AuditCheckpoint.id > after)
    if first_event_id is not None:
        query = query.where(AuditCheckpoint.event_id >= first_event_id)
    if last_event_id is not None:
        query = query.where(AuditCheckpoint.event_id <= last_event_id)
    query = query.order_by(AuditCheckpoint.id)
    if limit is not None:
        query = query.limit(limit)
    return [checkpoint_record(cp, key_fingerprint=fp or "") for cp, fp in session.execute(query)]


def newest_checkpoint(session: Session) -> AuditCheckpoint | None:
    return session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc())
                           .limit(1)).first()


# --- signing -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Head:
    event_id: int  # 0: before the first event
    event_hash: bytes
    events: int


_BEFORE_FIRST: Final = _Head(0, GENESIS, 0)


def _head_of(checkpoint: AuditCheckpoint | None) -> _Head:
    return _BEFORE_FIRST if checkpoint is None else \
        _Head(checkpoint.event_id, checkpoint.event_hash, checkpoint.events)


def _advance(session: Session, start: _Head) -> _Head:
    """Walk from ``start`` (a checkpointed head, re-checked first) to the stored head,
    checking every link and hash; AuditChainBroken for anything wrong: nothing broken
    is ever signed."""
    if start.event_id:
        anchor = session.get(AuditEvent, start.event_id, populate_existing=True)
        if anchor is None or anchor.event_hash != start.event_hash:
            raise AuditChainBroken(
                f"event #{start.event_id}, which the newest checkpoint covers, is "
                f"{'missing' if anchor is None else 'not the event it signed'}: the trail "
                "was truncated or rewritten; no checkpoint is signed",
                kind="truncated" if anchor is None else "altered")
        verify_chain([anchor], prev_hash=anchor.prev_hash)
    head, locate = start, partial(_locate, session)
    for event in stored_events(session, after_id=start.event_id):
        verify_chain([event], prev_hash=head.event_hash, locate=locate)
        head = _Head(event.id, event.event_hash, head.events + 1)
    return head


def _audit_key(*, session: Session, provider: keys.KeyProvider, actor: str) -> Key:
    """The active audit signing key; the first is created, and that is recorded."""
    active = session.scalars(select(Key).where(Key.purpose == KeyPurpose.AUDIT_SIGNING,
                                               Key.state == KeyState.ACTIVE)
                             .order_by(Key.version.desc()).limit(1)).first()
    if active is not None:
        return active
    key = keys.active_key(session=session, provider=provider,
                          purpose=KeyPurpose.AUDIT_SIGNING)
    record(session=session, actor=actor, action="keys.created", target_type="key",
           target_id=str(key.id), detail={"purpose": key.purpose.value,
                                          "version": key.version,
                                          "fingerprint": key.fingerprint})
    return key


def sign_checkpoint(*, session: Session, provider: keys.KeyProvider, actor: str = "system",
                    now: datetime | None = None) -> AuditCheckpoint | None:
    """Sign the trail's head; None when it has not moved since the newest checkpoint.

    1. Without the append lock, walk from the newest checkpoint's event (which must
       still be there, with its hash) to the head: most of the reading, while appends
       go on.
    2. Take the append lock: no event can be appended until the caller commits. Read
       the newest checkpoint and the head again; head unchanged since that checkpoint:
       return None.
    3. Take the active ``audit_signing`` key; the first one is created here and
       ``keys.created`` recorded (under the lock, so this checkpoint covers it).
    4. Walk the rest of the way to the head under the lock.
    5. Sign the statement (event id, hash, count, time, key fingerprint); insert the
       row. Flushes; the caller commits, then stores the copy (``store_copy``).
    """
    unlocked = newest_checkpoint(session)
    walked = _advance(session, _head_of(unlocked))
    _lock_appends(session)
    newest = newest_checkpoint(session)
    head_id = session.scalar(select(func.max(AuditEvent.id)))
    if head_id is None or (newest is not None and head_id == newest.event_id):
        return None
    same = (newest.id if newest else None) == (unlocked.id if unlocked else None)
    key = _audit_key(session=session, provider=provider, actor=actor)
    head = _advance(session, walked if same else _head_of(newest))
    signer = provider.signing_key(key.provider_ref)
    if key.fingerprint is None or fingerprint(signer.public_key()) != key.fingerprint:
        raise IntegrityError(f"audit signing key version {key.version}: the provider's key "
                             "does not match the catalog's public key")
    signed_at = now or datetime.now(UTC)
    row = AuditCheckpoint(event_id=head.event_id, event_hash=head.event_hash,
                          events=head.events, signed_at=signed_at, key_id=key.id,
                          signature=b"")
    statement = statement_of(row, key_fingerprint=key.fingerprint)
    row.signature = signer.sign(statement.message())
    session.add(row)
    session.flush()
    return row


def store_missing_copy(*, session: Session, store: ObjectStore, hold: bool) -> int | None:
    """Store the newest checkpoint's copy if it is not stored yet (a run that stopped
    between its commit and its copy); returns that checkpoint's id, else None."""
    newest = newest_checkpoint(session)
    if newest is None:
        return None
    try:
        store.stat(copy_name(newest.id))
        return None
    except NotFound:
        pass
    key = session.get(Key, newest.key_id)
    assert key is not None and key.fingerprint is not None  # FK; a signing key
    store_copy(store=store, record=checkpoint_record(newest, key_fingerprint=key.fingerprint),
               hold=hold)
    return newest.id


# --- verifying the stored trail ---------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    id: int
    event_id: int
    events: int
    signed_at: datetime
    key_fingerprint: str


@dataclass
class TrailReport:
    """What ``verify_stored`` checked; up to the failure, when it raised."""

    events: int = 0
    head_id: int | None = None  # the last event checked
    head: bytes | None = None
    checkpoints: int = 0  # checkpoint rows whose signature verified
    copies: int = 0  # copies in the object store that matched their rows
    latest: CheckpointInfo | None = None
    pending_copy: int | None = None  # newest checkpoint, its copy not stored yet (grace)
    notes: list[str] = field(default_factory=list)


def verify_stored(*, session: Session, store: ObjectStore, report: TrailReport | None = None,
                  now: datetime | None = None) -> TrailReport:
    """Check the stored trail and its checkpoints; raise AuditChainBroken at the first
    failure (``kind`` says which). Steps (docs/design/audit.md, V1-V5):

    1. Every checkpoint row's signature verifies under the public key of its key
       version (retired keys included), the catalog's fingerprint matching that key.
    2. Every event, from GENESIS in id order, links to the one before it and its
       content re-computes to its hash (altered, removed, inserted, reordered).
    3. At each event a checkpoint covers: the event's hash is the checkpoint's, and the
       events counted so far are the checkpoint's count.
    4. No checkpoint covers an event beyond the trail's end (truncated) or one missing
       from it.
    5. The copies in the object store: each is well-formed, validly signed and equal to
       its row; none is missing a row (a deleted checkpoint, a rolled back catalog);
       every row has one, except the newest within ``COPY_GRACE`` of its signing.

    A checkpoint run or a key rotation may commit while this runs. The copies are
    listed first, then the checkpoint rows are read, then the keys: a copy is stored
    only after its row commits (P3, P4) and a row only names a key already committed,
    so under READ COMMITTED (each statement sees every commit before it) every listed
    copy's row and every row's key is read. A transaction whose snapshot is older
    (REPEATABLE READ, SERIALIZABLE) could miss them and report tampering that is not
    there: it is refused.
    """
    report = report if report is not None else TrailReport()
    now = now or datetime.now(UTC)
    isolation = session.execute(text("SHOW transaction_isolation")).scalar_one()
    if isolation != "read committed":
        raise ConfigurationError(f"the audit trail is verified under READ COMMITTED, not "
                                 f"{isolation}: an older snapshot misses checkpoints signed "
                                 "since, whose copies would then look like tampering")
    names = sorted(store.list(COPY_PREFIX))  # before the rows: see above
    # 1
    rows = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)
                           .execution_options(populate_existing=True)).all()
    signing_keys = _fingerprints(session)  # after the rows: every row's key is there
    statements: dict[int, Statement] = {}
    covering: dict[int, list[int]] = defaultdict(list)
    for cp in rows:
        if cp.key_id not in signing_keys:
            raise AuditChainBroken(f"checkpoint #{cp.id} names key #{cp.key_id}, which is not "
                                   "an audit signing key (the checkpoint was altered)",
                                   kind="checkpoint_altered")
        fp, public = signing_keys[cp.key_id]
        statements[cp.id] = statement_of(cp, key_fingerprint=fp)
        check_signature(statements[cp.id], cp.signature, public,
                        what=_describe(cp.id, statements[cp.id]))
        covering[cp.event_id].append(cp.id)
        report.checkpoints += 1
    if rows:
        newest = rows[-1]
        report.latest = CheckpointInfo(id=newest.id, event_id=newest.event_id,
                                       events=newest.events, signed_at=newest.signed_at,
                                       key_fingerprint=statements[newest.id].key_fingerprint)
    # 2, 3
    locate, prev, seen = partial(_locate, session), GENESIS, set()
    for event in stored_events(session):
        verify_chain([event], prev_hash=prev, locate=locate)
        prev = event.event_hash
        report.events += 1
        report.head_id, report.head = event.id, event.event_hash
        for cp_id in covering.get(event.id, ()):
            _check_covered(cp_id, statements[cp_id], event.event_hash, report.events)
            seen.add(cp_id)
    # 4
    unseen = [cp for cp in rows if cp.id not in seen]
    beyond = [cp for cp in unseen if report.head_id is None or cp.event_id > report.head_id]
    if beyond:
        last = max(beyond, key=lambda cp: cp.event_id)
        raise AuditChainBroken(
            f"{_trail_end(report)}, but checkpoint #{last.id} (signed {_when(last.signed_at)})"
            f" covers event #{last.event_id} ({last.events} events): events were removed from "
            "the end", kind="truncated")
    if unseen:
        cp = unseen[0]
        raise AuditChainBroken(f"{_describe(cp.id, statements[cp.id])}, but event "
                               f"#{cp.event_id} is not in the trail: it was removed",
                               kind="removed")
    # 5
    _check_copies(store=store, names=names, rows=rows, statements=statements,
                  signing_keys=signing_keys, report=report, now=now)
    return report


def _trail_end(report: TrailReport) -> str:
    if report.head_id is None:
        return "the trail is empty"
    return f"the trail ends at event #{report.head_id} ({report.events} events)"


def _check_covered(cp_id: int, statement: Statement, event_hash: bytes, events: int) -> None:
    what = _describe(cp_id, statement)
    if statement.event_hash != event_hash:
        raise AuditChainBroken(
            f"{what} signed hash {statement.event_hash.hex()[:16]}… for it, the trail has "
            f"{event_hash.hex()[:16]}…: the trail was rewritten (re-hashed) at or before "
            f"event #{statement.event_id}", kind="altered")
    if statement.events != events:
        raise AuditChainBroken(
            f"{what} counts {statement.events} events up to it, the trail has {events}: "
            f"events were {'removed' if events < statement.events else 'inserted'} before "
            f"event #{statement.event_id}", kind="removed" if events < statement.events
            else "inserted")


def _read_copy(name: str, blob: bytes, *, by_fingerprint: Mapping[str, Ed25519PublicKey]
               ) -> tuple[int, Statement, bytes]:
    """A copy's checkpoint id, statement and signature: well-formed, named by its id,
    signed by a catalog audit signing key (else ``checkpoint_altered``)."""
    what = f"the copy {name}"
    try:
        value = json.loads(blob)
    except ValueError:
        value = None
    cp_id, statement, signature = parse_record(value, what=what)
    if copy_name(cp_id) != name:
        raise AuditChainBroken(f"{what} holds checkpoint #{cp_id}: the copy was renamed",
                               kind="checkpoint_altered")
    key = by_fingerprint.get(statement.key_fingerprint)
    if key is None:
        raise AuditChainBroken(f"{what} is signed by key {statement.key_fingerprint[:16]}…, "
                               "which is not an audit signing key in the catalog",
                               kind="checkpoint_altered")
    check_signature(statement, signature, key, what=what)
    return cp_id, statement, signature


def _check_copies(*, store: ObjectStore, names: list[str], rows: list[AuditCheckpoint],
                  statements: dict[int, Statement],
                  signing_keys: dict[int, tuple[str, Ed25519PublicKey]],
                  report: TrailReport, now: datetime) -> None:
    """Step 5 of ``verify_stored``, over ``names``: the copies listed before the rows
    were read."""
    by_fingerprint = dict(signing_keys.values())
    for name in names:
        if not _COPY_NAME.fullmatch(name):
            raise AuditChainBroken(f"the object store holds {name}, which is not a "
                                   "checkpoint copy", kind="checkpoint_altered")
    read = partial(_read_copy, by_fingerprint=by_fingerprint)
    copies: dict[int, tuple[Statement, bytes]] = {}
    with ThreadPoolExecutor(max_workers=COPY_READERS) as pool:
        for name, blob in zip(names, pool.map(store.get, names), strict=True):
            cp_id, statement, signature = read(name, blob)
            copies[cp_id] = statement, signature
    by_id = {cp.id: cp for cp in rows}
    orphans = sorted(set(copies) - set(by_id))
    if orphans:  # its row committed before the listing, so it was read unless deleted
        cp_id = orphans[-1]
        statement = copies[cp_id][0]
        cut = report.head_id is None or statement.event_id > report.head_id
        raise AuditChainBroken(
            f"{_describe(cp_id, statement)} is in the object store but not in the "
            f"database: its row was deleted (or the catalog restored from an earlier "
            f"state)" + (f"; {_trail_end(report)}, so events were removed from the end"
                         if cut else ""),
            kind="truncated" if cut else "checkpoint_missing")
    for cp in rows:
        if cp.id not in copies:
            # Signed after the listing: its copy may have been stored since. Look again.
            try:
                blob = store.get(copy_name(cp.id))
            except NotFound:
                if cp is rows[-1] and now - cp.signed_at < COPY_GRACE:
                    report.pending_copy = cp.id
                    report.notes.append(f"checkpoint #{cp.id} was signed at "
                                        f"{_when(cp.signed_at)}; its copy is not stored yet")
                    continue
                raise AuditChainBroken(
                    f"{_describe(cp.id, statements[cp.id])} has no copy in the object store "
                    f"({copy_name(cp.id)}): the copy was deleted, or storing it failed and "
                    "no checkpoint run has stored it since", kind="checkpoint_missing") from None
            cp_id, statement, signature = read(copy_name(cp.id), blob)
            copies[cp_id] = statement, signature
        statement, signature = copies[cp.id]
        if statements[cp.id] != statement or cp.signature != signature:
            raise AuditChainBroken(
                f"checkpoint #{cp.id} differs from its copy in the object store (row: "
                f"covers event #{cp.event_id}, signed {_when(cp.signed_at)}; copy: "
                f"covers event #{statement.event_id}, signed "
                f"{_us_when(statement.signed_at_us)}): the catalog was restored from an "
                "earlier state or the checkpoint was replaced", kind="checkpoint_altered")
        report.copies += 1


@dataclass(frozen=True)
class TrailCheck:
    """What checking the stored trail found, for the API and the CLI: ``failure`` is
    None when it is intact."""

    report: TrailReport
    failure: str | None
    kind: FailureKind | None

    @property
    def events(self) -> int:  # checked before the first failure (all, when intact)
        return self.report.events

    @property
    def head(self) -> str | None:  # hex hash of the last event checked
        return self.report.head.hex() if self.report.head is not None else None


def check_stored(*, session: Session, store: ObjectStore) -> TrailCheck:
    """``verify_stored``, its failure as a result: what the API and the CLI report."""
    report = TrailReport()
    try:
        verify_stored(session=session, store=store, report=report)
    except AuditChainBroken as exc:
        return TrailCheck(report=report, failure=str(exc), kind=exc.kind)
    return TrailCheck(report=report, failure=None, kind=None)


# --- exports, and checking them offline -------------------------------------------------


EXPORT_FORMATS: Final = ("jsonl", "csv")
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
    if fmt not in EXPORT_FORMATS:
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


@dataclass(frozen=True)
class _Exported:
    """An exported event (``export_row``), read back for ``verify_chain``."""

    id: int
    occurred_at: datetime
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    detail: dict[str, Any]
    prev_hash: bytes
    event_hash: bytes

    @classmethod
    def parse(cls, row: Mapping[str, Any], *, where: str) -> _Exported:
        try:
            return cls(id=int(row["id"]), occurred_at=datetime.fromisoformat(row["occurred_at"]),
                       actor=row["actor"], action=row["action"],
                       target_type=row["target_type"], target_id=row["target_id"],
                       detail=row["detail"], prev_hash=bytes.fromhex(row["prev_hash"]),
                       event_hash=bytes.fromhex(row["event_hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{where}: not an exported audit event: {exc}") from None


@dataclass(frozen=True)
class ExportCheck:
    events: int
    first_id: int | None
    last_id: int | None
    checkpoints: int  # verified against events of the export
    outside: int  # given, validly signed, covering events outside the export


def check_export(rows: Iterable[Mapping[str, Any]], checkpoints: Iterable[Any], *,
                 trusted: Mapping[str, Ed25519PublicKey], source: str = "the export"
                 ) -> ExportCheck:
    """Check an exported range of the trail against signed checkpoints, offline.

    1. Every checkpoint record is well-formed and signed by a trusted key (by
       fingerprint: the keys GET /api/v1/keys publishes, obtained out of band).
    2. Every exported event re-computes to its hash and links to the one before it;
       the first links to what its ``prev_hash`` says (a range starts mid-trail; an
       export from the first event starts at GENESIS).
    3. Each checkpoint covering an event within the range names an exported event with
       that hash, and the events between checkpoints are as many as their counts say
       (from GENESIS: the counts themselves).
    4. At least one checkpoint covers an event of the export: otherwise nothing ties it
       to a signed head.
    Not detectable: events dropped from the start of a mid-trail export, before its
    first covered checkpoint, or after its last (audit.md, Caveats).
    Raises AuditChainBroken, or InvalidInput for a row that is not an exported event
    (named as line n of ``source``: one row per line)."""
    parsed: dict[int, tuple[int, Statement]] = {}
    for n, value in enumerate(checkpoints, 1):
        cp_id, statement, signature = parse_record(value, what=f"checkpoint record {n}")
        public = trusted.get(statement.key_fingerprint)
        if public is None:
            raise AuditChainBroken(f"{_describe(cp_id, statement)} is signed by key "
                                   f"{statement.key_fingerprint[:16]}…, which is not among "
                                   "the trusted keys", kind="checkpoint_altered")
        check_signature(statement, signature, public, what=_describe(cp_id, statement))
        parsed[statement.event_id] = (cp_id, statement)
    count, prev, first, last = 0, None, None, None
    offset: int | None = None  # checkpoint count minus position in the export
    matched = 0
    for n, row in enumerate(rows, 1):
        event = _Exported.parse(row, where=f"{source}, line {n}")
        if prev is None:
            prev = event.prev_hash
            offset = 0 if prev == GENESIS else None
            first = event.id
        verify_chain([event], prev_hash=prev)
        prev, last, count = event.event_hash, event.id, count + 1
        if event.id not in parsed:
            continue
        cp_id, statement = parsed[event.id]
        if offset is None:  # the events before the export: known from here on
            offset = statement.events - count
        _check_covered(cp_id, statement, event.event_hash, count + offset)
        matched += 1
    within = [(cp_id, s) for cp_id, s in parsed.values()
              if first is not None and last is not None and first <= s.event_id <= last]
    if len(within) > matched:
        cp_id, statement = min(within, key=lambda c: c[1].event_id)
        raise AuditChainBroken(f"{_describe(cp_id, statement)}, which the export lacks: "
                               "events were removed from the export", kind="removed")
    if not matched:
        raise AuditChainBroken("no checkpoint covers an event of the export: nothing ties "
                               "it to a signed head", kind="checkpoint_missing")
    return ExportCheck(events=count, first_id=first, last_id=last, checkpoints=matched,
                       outside=len(parsed) - matched)
