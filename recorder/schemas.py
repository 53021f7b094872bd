"""API shapes of the recorder context."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

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
