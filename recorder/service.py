"""Camera registry logic. Keyword-only, typed, takes the session, only flushes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from vigil.catalog.models import Camera


def list_cameras(*, session: Session) -> Sequence[Camera]:
    return session.scalars(select(Camera).order_by(Camera.name)).all()
