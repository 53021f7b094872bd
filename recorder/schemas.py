"""API shapes of the recorder context."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from vigil.catalog.models import CameraStatus


class CameraOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    # Credentials in the URL are redacted: the API never returns them.
    source_url: str
    region_id: int | None
    chunk_target_s: int
    status: CameraStatus
    sensitive: bool
    created_at: datetime


class CameraIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    # rtsp://user:pass@host/..., rtmp://, srt://, udp://, http(s):// (HLS), synthetic://
    url: str = Field(min_length=1, max_length=2000)
    region: str | None = Field(default=None, max_length=64, description="region code")
    chunk_seconds: int = Field(default=60, ge=2, le=300)


class CameraPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Exports of a sensitive camera may need a second person's approval.
    sensitive: bool


class CameraHealthOut(BaseModel):
    """One camera's recording health for a day (recorder.health)."""

    id: int
    name: str
    region_id: int | None
    status: CameraStatus  # now, not at the end of the day
    last_chunk_end_at: datetime | None  # now, not at the end of the day
    # Recorded over due seconds; null when nothing was due (created later, the future).
    completeness_day: float | None
    # 24 values by local hour of day; null for hours not due (future, before creation,
    # the hour skipped on a spring-forward day).
    completeness_by_hour: list[float | None]
    online_fraction: float | None  # 'recording' seconds over due seconds
    counted: bool  # enabled and due: part of the day's rates
    online: bool  # online_fraction >= ONLINE_FRACTION_THRESHOLD
    good: bool  # completeness_day >= GOOD_COMPLETENESS_THRESHOLD


class RegionHealthOut(BaseModel):
    """A region subtree's health for a day; region_id null: every camera in scope."""

    region_id: int | None
    code: str | None
    name: str | None
    cameras: int  # counted cameras (enabled, due)
    online: int
    online_rate: float | None  # online / cameras
    good: int
    good_rate: float | None  # good / cameras
    mean_completeness: float | None  # mean of the cameras' day completeness
    online_fraction: float | None  # time-weighted over all counted cameras
    meets_target: bool | None  # online_rate >= TARGET_ONLINE_RATE; null without cameras
