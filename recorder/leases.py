"""Camera leases in PostgreSQL: each camera recorded by exactly one recorder.

A recorder holds a lease for ``LEASE_TTL`` and renews all of its leases every
``RENEW_INTERVAL``; a lease that was not renewed expires and any recorder may take
it. Every time comparison uses the database's clock (``now()``), never a
recorder's, so that recorders with skewed clocks agree. With these figures a dead
recorder's cameras are taken over within LEASE_TTL + RENEW_INTERVAL (20 s) after its
last renewal.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Final

from sqlalchemy import text
from sqlalchemy.orm import Session

LEASE_TTL: Final = timedelta(seconds=15)
RENEW_INTERVAL: Final = timedelta(seconds=5)


def new_recorder_id() -> str:
    """host:pid:random, unique per recorder process, readable in listings."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_ACQUIRE = text("""
INSERT INTO camera_leases (camera_id, recorder_id, acquired_at, expires_at)
SELECT c.id, :me, now(), now() + make_interval(secs => :ttl_s)
FROM cameras c
WHERE c.id = ANY(:ids) AND c.status <> 'disabled'
ON CONFLICT (camera_id) DO UPDATE
    SET recorder_id = excluded.recorder_id,
        acquired_at = CASE WHEN camera_leases.recorder_id = excluded.recorder_id
                           THEN camera_leases.acquired_at ELSE excluded.acquired_at END,
        expires_at = excluded.expires_at
    WHERE camera_leases.expires_at < now() OR camera_leases.recorder_id = excluded.recorder_id
RETURNING camera_id
""")


def acquire(*, session: Session, recorder_id: str, camera_ids: Iterable[int]) -> set[int]:
    """Take (or keep) the leases of ``camera_ids`` that are free, expired or ours.
    Returns the cameras this recorder now holds among them."""
    ids = list(camera_ids)
    if not ids:
        return set()
    rows = session.execute(_ACQUIRE, {"me": recorder_id, "ids": ids,
                                      "ttl_s": LEASE_TTL.total_seconds()}).scalars()
    return set(rows)


def renew(*, session: Session, recorder_id: str) -> set[int]:
    """Extend every lease that still names this recorder; returns those cameras.

    An expired lease that nobody took is still ours (expiry only makes it
    available), so a recorder cut off from the database for longer than the TTL keeps
    its cameras when it comes back, unless another recorder took them meanwhile. A
    camera missing from the result was taken and must stop here."""
    rows = session.execute(text("""
        UPDATE camera_leases SET expires_at = now() + make_interval(secs => :ttl_s)
        WHERE recorder_id = :me
        RETURNING camera_id"""), {"me": recorder_id, "ttl_s": LEASE_TTL.total_seconds()})
    return set(rows.scalars())


def release(*, session: Session, recorder_id: str, camera_ids: Iterable[int] | None = None
            ) -> None:
    """Give leases up at a clean stop, so another recorder need not wait for expiry."""
    if camera_ids is None:
        session.execute(text("DELETE FROM camera_leases WHERE recorder_id = :me"),
                        {"me": recorder_id})
    else:
        session.execute(text("DELETE FROM camera_leases WHERE recorder_id = :me "
                             "AND camera_id = ANY(:ids)"),
                        {"me": recorder_id, "ids": list(camera_ids)})


def reap_dead_local(*, session: Session, hostname: str | None = None) -> list[int]:
    """Free the leases of recorders on this host whose process is gone (a crash, kill
    -9), so that a restarted recorder resumes at once instead of waiting for expiry.
    A pid that exists is left alone, whatever it now runs: expiry handles it."""
    import psutil

    host = hostname or socket.gethostname()
    rows = session.execute(text("SELECT camera_id, recorder_id FROM camera_leases "
                                "WHERE recorder_id LIKE :prefix"),
                           {"prefix": f"{host}:%"}).all()
    dead = [(r.camera_id, r.recorder_id) for r in rows
            if not psutil.pid_exists(int(r.recorder_id.split(":")[1]))]
    for camera_id, recorder_id in dead:
        session.execute(text("DELETE FROM camera_leases WHERE camera_id = :c "
                             "AND recorder_id = :r"), {"c": camera_id, "r": recorder_id})
    return [camera_id for camera_id, _ in dead]


def holders(*, session: Session) -> dict[int, str]:
    rows = session.execute(text("SELECT camera_id, recorder_id FROM camera_leases "
                                "WHERE expires_at >= now()"))
    return {r.camera_id: r.recorder_id for r in rows}
