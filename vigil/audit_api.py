"""HTTP routes for auditors: check the audit trail and its signed checkpoints, export
the trail for a time range, list the checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from vigil import audit, objectstore
from vigil.auth.api import SessionDep, allow
from vigil.catalog.models import Principal, RoleName
from vigil.db import session_scope
from vigil.intervals import parse_instant
from vigil.settings import get_settings

router = APIRouter(prefix="/api/v1", tags=["audit"])

_auditors = allow(RoleName.ADMIN, RoleName.AUDITOR, system=True)

# Checkpoints listed per request at most (a year of ten-minute checkpoints is ~50,000).
MAX_CHECKPOINTS: Final = 10_000


def checkpoint_store() -> objectstore.ObjectStore:
    """Where the copies of checkpoints live (a dependency, so that tests give their own)."""
    return objectstore.get_object_store(get_settings())


StoreDep = Annotated[objectstore.ObjectStore, Depends(checkpoint_store)]


class LatestCheckpointOut(BaseModel):
    id: int
    event_id: int
    events: int
    signed_at: datetime
    key_fingerprint: str


class TrailCheckOut(BaseModel):
    ok: bool
    events: int  # checked (before the first failure, if any)
    head: str | None  # hex hash of the last event checked
    failure: str | None
    # altered, removed, inserted, reordered, truncated, checkpoint_missing,
    # checkpoint_altered (docs/design/audit.md)
    kind: str | None
    checkpoints: int  # checkpoint rows whose signature verified
    copies: int  # copies in the object store that matched their rows
    latest_checkpoint: LatestCheckpointOut | None
    notes: list[str]


class CheckpointOut(BaseModel):
    """A checkpoint record, as its copy in the object store holds it; ``vigil audit
    check-export --checkpoints`` reads a list of these."""

    format: str
    checkpoint_id: int
    event_id: int
    event_hash: str
    events: int
    signed_at_us: int
    key_fingerprint: str
    signature: str


def trail_check_out(check: audit.TrailCheck) -> TrailCheckOut:
    report = check.report
    latest = report.latest
    return TrailCheckOut(
        ok=check.failure is None, events=check.events, head=check.head,
        failure=check.failure, kind=check.kind, checkpoints=report.checkpoints,
        copies=report.copies, notes=report.notes,
        latest_checkpoint=None if latest is None else LatestCheckpointOut(
            id=latest.id, event_id=latest.event_id, events=latest.events,
            signed_at=latest.signed_at, key_fingerprint=latest.key_fingerprint))


@router.get("/audit/verify", response_model=TrailCheckOut)
def verify_trail(session: SessionDep, store: StoreDep,
                 _principal: Annotated[Principal, Depends(_auditors)]) -> TrailCheckOut:
    """Re-compute every event's hash and link from the first, check every signed
    checkpoint and its copy in the object store: an altered, removed, inserted or
    reordered event, a cut-off end and a deleted or altered checkpoint are named."""
    return trail_check_out(audit.check_stored(session=session, store=store))


@router.get("/audit/checkpoints", response_model=list[CheckpointOut])
def list_checkpoints(session: SessionDep,
                     _principal: Annotated[Principal, Depends(_auditors)],
                     after: Annotated[int, Query(ge=0, le=2**63 - 1,
                                                 description="checkpoint id")] = 0,
                     limit: Annotated[int, Query(ge=1, le=MAX_CHECKPOINTS)] = 1000
                     ) -> list[dict[str, Any]]:
    """Signed checkpoints in id order, after checkpoint ``after``: with an export of
    the events and the published audit signing keys (GET /api/v1/keys), an auditor
    checks the export offline (``vigil audit check-export``)."""
    return audit.checkpoint_records(session=session, after=after, limit=limit)


@router.get("/audit/events")
def export_events(session: SessionDep,
                  _principal: Annotated[Principal, Depends(_auditors)],
                  start: Annotated[str | None, Query(alias="from")] = None,
                  end: Annotated[str | None, Query(alias="to")] = None,
                  fmt: Annotated[Literal["jsonl", "csv"], Query(alias="format")] = "jsonl"
                  ) -> StreamingResponse:
    """The events that occurred in ``[from, to)`` (ISO 8601 with offsets; default all),
    as JSON lines or CSV, every hashed field included so that the export re-computes."""
    t0 = parse_instant(start) if start else None
    t1 = parse_instant(end) if end else None
    del session  # the stream outlives the request's session: it reads with its own

    def lines() -> Iterator[str]:
        with session_scope() as own:
            yield from audit.export_lines(audit.stored_events(own, start=t0, end=t1),
                                          fmt=fmt)

    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    return StreamingResponse(lines(), media_type=media)
