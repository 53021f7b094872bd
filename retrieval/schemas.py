"""API shapes of the retrieval context."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    status: str


class WhoAmI(BaseModel):
    id: int
    name: str
    role: str
    region_id: int | None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


# --- evidence ------------------------------------------------------------------------


class CaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=300)
    reference: str | None = Field(default=None, min_length=1, max_length=64)
    description: str = Field(default="", max_length=5000)


class CaseOut(BaseModel):
    reference: str
    title: str
    description: str
    status: str
    created_at: datetime
    closed_at: datetime | None
    members: list[str]


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principal: str = Field(min_length=1, max_length=200)


class CustodyEventOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    export_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class CustodyOut(BaseModel):
    case: str
    verified: bool  # the chain re-computes from the first event to the last
    events: list[CustodyEventOut]


class ExportItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera: str = Field(min_length=1, max_length=200)
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ExportItemIn] = Field(min_length=1, max_length=16)
    purpose: str = Field(min_length=1, max_length=500)
    # Named on the watermarked copy; no watermarked copy without one.
    recipient: str | None = Field(default=None, min_length=1, max_length=500)


class ExportOut(BaseModel):
    id: str
    case: str
    status: str
    stage: str
    progress_pct: int
    purpose: str
    recipient: str | None
    error: str | None
    package_sha256: str | None
    package_bytes: int | None
    created_at: datetime
    finished_at: datetime | None
    # not_required, pending (the package waits for a second person), approved, rejected
    approval: str
    approval_reason: str | None
    decision_note: str | None


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=1000)


class PolicyIn(BaseModel):
    """An export approval policy: for a region (by code) or, without one, the default."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = Field(default=None, max_length=64)
    max_duration_s: int | None = Field(default=None, gt=0, le=10 * 86400)
    sensitive_cameras: bool = True


class PolicyOut(BaseModel):
    scope: str
    max_duration_s: int | None
    sensitive_cameras: bool
    updated_at: datetime


class SpanOut(BaseModel):
    start: datetime
    end: datetime


class GapOut(SpanOut):
    cause: str


class TimelineOut(BaseModel):
    camera: str
    start: datetime
    end: datetime
    recorded: list[SpanOut]
    gaps: list[GapOut]


class FailureOut(BaseModel):
    file: str
    check: str
    message: str


class VerifyOut(BaseModel):
    ok: bool
    failures: list[FailureOut]
    checks: dict[str, int]
