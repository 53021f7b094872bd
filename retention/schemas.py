"""API shapes of the retention context."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class ScopeIn(BaseModel):
    """Exactly one of camera, region, default."""

    model_config = ConfigDict(extra="forbid")

    camera: str | None = Field(default=None, min_length=1, max_length=200)
    region: str | None = Field(default=None, min_length=1, max_length=64)
    default: bool = False

    @model_validator(mode="after")
    def _one(self) -> ScopeIn:
        if (self.camera is not None) + (self.region is not None) + self.default != 1:
            raise ValueError("give exactly one of camera, region or default")
        return self


class RuleIn(ScopeIn):
    keep_days: int = Field(ge=1, le=36_500)


class RuleOut(BaseModel):
    scope: str
    keep_days: int
    updated_at: datetime


class PreviewOut(BaseModel):
    camera: str
    rule: str | None
    keep_days: int | None
    chunks: int
    bytes: int
    start: datetime | None
    end: datetime | None
    held_chunks: int


class HoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera: str = Field(min_length=1, max_length=200)
    start: AwareDatetime = Field(alias="from")
    end: AwareDatetime = Field(alias="to")
    reason: str = Field(min_length=1, max_length=2000)


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class HoldOut(BaseModel):
    id: int
    case: str
    camera: str
    start: datetime
    end: datetime
    reason: str
    export_id: str | None
    created_at: datetime
    released_at: datetime | None
    release_reason: str | None


class WormOut(BaseModel):
    legal_hold: str  # enforced | not enforced | unsupported | unknown (never probed)
    detail: str
    probed_at: datetime | None
    object_lock: str  # VIGIL_OBJECT_LOCK
