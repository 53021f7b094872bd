"""Factories: catalog rows with valid defaults, overridable per test."""

from __future__ import annotations

import hashlib
import itertools
import os
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from vigil.catalog.models import (
    Camera,
    Chunk,
    ClockSource,
    DataKey,
    Key,
    KeyPurpose,
    Region,
    RegionLevel,
)

_counter = itertools.count()


def camera(session: Session, **overrides: object) -> Camera:
    n = next(_counter)
    fields: dict[str, object] = {"name": f"cam-{n}-{os.urandom(3).hex()}",
                                 "source_url": f"rtsp://127.0.0.1:8554/cam{n}"}
    fields.update(overrides)
    row = Camera(**fields)
    session.add(row)
    session.flush()
    return row


def kek(session: Session) -> Key:
    row = Key(purpose=KeyPurpose.KEK, version=next(_counter) + 1000, provider="file",
              provider_ref="test")
    session.add(row)
    session.flush()
    return row


def chunk(session: Session, *, cam: Camera, key: Key, seq: int, start_at: datetime,
          seconds: float = 60.0, **overrides: object) -> Chunk:
    dk = DataKey(kek_id=key.id, wrapped=os.urandom(40))
    session.add(dk)
    session.flush()
    digest = hashlib.sha256(f"{cam.id}/{seq}".encode()).digest()
    fields: dict[str, object] = dict(
        camera_id=cam.id, seq=seq, start_at=start_at,
        end_at=start_at + timedelta(seconds=seconds),
        media_duration_us=int(seconds * 1_000_000), clock_source=ClockSource.RTCP,
        plaintext_bytes=1000, stored_bytes=1028,
        object_key=f"chunks/{cam.id}/{seq}-{os.urandom(4).hex()}", sha256=digest,
        chain_hash=hashlib.sha256(digest).digest(), data_key_id=dk.id,
        codec={"video": "h264"})
    fields.update(overrides)
    row = Chunk(**fields)
    session.add(row)
    session.flush()
    return row


def region(session: Session, *, parent: Region | None = None, **overrides: object) -> Region:
    """A region under ``parent`` (or a province), its materialised path filled in."""
    n = next(_counter)
    fields: dict[str, object] = {
        "code": f"R{n}{os.urandom(3).hex()}", "name": f"region {n}", "parent_id":
        None if parent is None else parent.id,
        "level": RegionLevel.PROVINCE if parent is None else RegionLevel.CITY, "path": ""}
    fields.update(overrides)
    row = Region(**fields)
    session.add(row)
    session.flush()
    row.path = f"{'' if parent is None else parent.path}{row.id}/"
    session.flush()
    return row
