"""Lease semantics on the database's clock: one holder, expiry, renewal, reaping."""

from __future__ import annotations

import subprocess

from sqlalchemy import text
from sqlalchemy.orm import Session

from recorder import leases
from tests import factories


def _expire(session: Session, camera_id: int) -> None:
    session.execute(text("UPDATE camera_leases SET expires_at = now() - interval '1 second' "
                         "WHERE camera_id = :c"), {"c": camera_id})


def test_one_holder_at_a_time_until_expiry(session: Session) -> None:
    cam = factories.camera(session)
    assert leases.acquire(session=session, recorder_id="h:1:a", camera_ids=[cam.id]) == {cam.id}
    assert leases.acquire(session=session, recorder_id="h:2:b", camera_ids=[cam.id]) == set()
    assert leases.renew(session=session, recorder_id="h:1:a") == {cam.id}
    _expire(session, cam.id)
    assert leases.acquire(session=session, recorder_id="h:2:b", camera_ids=[cam.id]) == {cam.id}
    assert leases.renew(session=session, recorder_id="h:1:a") == set()  # lost: must stop
    assert leases.holders(session=session)[cam.id] == "h:2:b"


def test_an_expired_lease_nobody_took_is_kept_on_renewal(session: Session) -> None:
    cam = factories.camera(session)
    leases.acquire(session=session, recorder_id="h:1:a", camera_ids=[cam.id])
    _expire(session, cam.id)  # e.g. the database was away longer than the TTL
    assert leases.renew(session=session, recorder_id="h:1:a") == {cam.id}


def test_disabled_cameras_are_never_leased(session: Session) -> None:
    cam = factories.camera(session, status="disabled")
    assert leases.acquire(session=session, recorder_id="h:1:a", camera_ids=[cam.id]) == set()


def test_leases_of_dead_local_recorders_are_freed(session: Session) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    cam, other = factories.camera(session), factories.camera(session)
    import os
    import socket

    host = socket.gethostname()
    leases.acquire(session=session, recorder_id=f"{host}:{dead.pid}:x", camera_ids=[cam.id])
    leases.acquire(session=session, recorder_id=f"{host}:{os.getpid()}:y",
                   camera_ids=[other.id])
    assert leases.reap_dead_local(session=session) == [cam.id]
    assert leases.holders(session=session) == {other.id: f"{host}:{os.getpid()}:y"}
