"""HTTP routes for auditors: check the audit trail, export it for a time range."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from vigil import audit
from vigil.auth.api import SessionDep, allow
from vigil.catalog.models import Principal, RoleName
from vigil.db import session_scope
from vigil.intervals import parse_instant

router = APIRouter(prefix="/api/v1", tags=["audit"])

_auditors = allow(RoleName.ADMIN, RoleName.AUDITOR)


class TrailCheckOut(BaseModel):
    ok: bool
    events: int  # checked (before the first failure, if any)
    head: str | None  # hex hash of the last event checked
    failure: str | None


@router.get("/audit/verify", response_model=TrailCheckOut)
def verify_trail(session: SessionDep,
                 _principal: Annotated[Principal, Depends(_auditors)]) -> TrailCheckOut:
    """Re-compute every event's hash and link from the first: an altered, removed,
    inserted or reordered event is named."""
    check = audit.check_stored(session)
    return TrailCheckOut(ok=check.failure is None, events=check.events, head=check.head,
                         failure=check.failure)


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
