"""Custody events: the hash-linked chain-of-custody record of a case. Pure, no I/O.

Every action on a case (opened, member added, export requested, built, failed,
downloaded, closed) is a custody event. The events of one case form one chain: each
event's hash covers the previous event's hash and the event's own fields in canonical
JSON, so that changing, removing, inserting or reordering an event breaks every hash
after it. The first event of a case follows ``GENESIS``.

A package carries its case's events up to and including the event that sealed it, as
``custody.jsonl``: one event per line, in the encoding ``line`` gives, so that an
auditor re-computes every hash offline (docs/design/package.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from vigil.crypto import canonical
from vigil.errors import IntegrityError

GENESIS: Final = bytes(32)
_DOMAIN: Final = b"vigil-custody-v1\x00"


class CustodyChainBroken(IntegrityError):
    """A custody event's hash or link does not match: the record was altered."""

    code = "custody_chain_broken"


@dataclass(frozen=True)
class CustodyEvent:
    """One event. ``at_us`` is UTC microseconds since the epoch; ``detail`` is JSON."""

    case: str  # the case's reference
    seq: int  # 1, 2, ... within the case
    at_us: int
    actor: str
    action: str
    export_id: str | None
    detail: Mapping[str, Any]
    prev_hash: bytes

    def body(self) -> dict[str, Any]:
        return {"case": self.case, "seq": self.seq, "at_us": self.at_us, "actor": self.actor,
                "action": self.action, "export_id": self.export_id,
                "detail": dict(self.detail), "prev_hash": self.prev_hash.hex()}

    def digest(self) -> bytes:
        return hashlib.sha256(_DOMAIN + canonical(self.body())).digest()

    def line(self, event_hash: bytes) -> str:
        """The event as one line of ``custody.jsonl`` (canonical JSON, no newline)."""
        return canonical({**self.body(), "hash": event_hash.hex()}).decode()


def json_ready(detail: Mapping[str, Any]) -> dict[str, Any]:
    """``detail`` as it will read back from JSON (and JSONB): what is hashed is what is
    stored. Integers, strings, booleans, null, lists and objects only: no floats."""
    return json.loads(canonical(dict(detail)))


def parse_line(line: str) -> tuple[CustodyEvent, bytes]:
    """An event and its recorded hash from a ``custody.jsonl`` line; ValueError if the
    line is not one."""
    try:
        raw = json.loads(line)
        event = CustodyEvent(case=str(raw["case"]), seq=int(raw["seq"]),
                             at_us=int(raw["at_us"]), actor=str(raw["actor"]),
                             action=str(raw["action"]),
                             export_id=None if raw["export_id"] is None else str(raw["export_id"]),
                             detail=dict(raw["detail"]), prev_hash=bytes.fromhex(raw["prev_hash"]))
        recorded = bytes.fromhex(raw["hash"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a custody event: {exc}") from None
    if event.line(recorded) != line.rstrip("\n"):
        raise ValueError("not in canonical encoding")
    return event, recorded


def verify_events(events: Iterable[tuple[CustodyEvent, bytes]], *,
                  prev_hash: bytes = GENESIS) -> int:
    """Check ``(event, recorded hash)`` pairs in order from ``prev_hash``; return the
    number checked. Raises CustodyChainBroken at the first event that does not follow."""
    count = 0
    expected_seq: int | None = None
    for event, recorded in events:
        where = f"custody event {event.seq} of case {event.case}"
        if event.prev_hash != prev_hash:
            raise CustodyChainBroken(f"{where}: does not link to the event before it (an "
                                     "event was removed, inserted or reordered)")
        if expected_seq is not None and event.seq != expected_seq:
            raise CustodyChainBroken(f"{where}: sequence number out of order")
        if event.digest() != recorded:
            raise CustodyChainBroken(f"{where}: content does not match its hash (the event "
                                     "was altered)")
        prev_hash, expected_seq = recorded, event.seq + 1
        count += 1
    return count
