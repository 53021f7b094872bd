"""Celery tasks of the retention context: the sweeper, S3 legal holds, the integrity
scrub, the WORM probe. Beat schedules are declared in ``vigil/tasks.py``.

Each task is idempotent and resumable: the sweeper finishes tombstones an interrupted
run left, legal holds are marked per hold once done, the scrub only reads. A storage
or database outage fails the run; the next scheduled one picks up.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready

from retention import scrub, sweep, worm
from vigil.db import session_scope
from vigil.objectstore import get_object_store
from vigil.settings import get_settings
from vigil.tasks import celery_app

log = logging.getLogger("vigil.retention")


@celery_app.task(name="vigil.retention.sweep", acks_late=True, soft_time_limit=3300,
                 time_limit=3600)
def sweep_task() -> dict[str, Any]:
    settings = get_settings()
    worm.sync_legal_holds(settings=settings, store=get_object_store(settings))
    try:
        report = sweep.sweep(settings=settings)
    except sweep.SweepBusy:  # the previous run is still deleting: it goes on
        return {"skipped": "another sweep is running"}
    return {"sweep": str(report.sweep_id), "chunks": report.chunks,
            "bytes": report.stored_bytes, "resumed": report.resumed,
            "refused": len(report.refused)}


@celery_app.task(name="vigil.retention.legal_holds", acks_late=True, soft_time_limit=300,
                 time_limit=360)
def legal_holds_task() -> dict[str, int]:
    settings = get_settings()
    return worm.sync_legal_holds(settings=settings, store=get_object_store(settings))


@celery_app.task(name="vigil.retention.scrub", acks_late=True, soft_time_limit=3300,
                 time_limit=3600)
def scrub_task() -> dict[str, Any]:
    return scrub.scheduled_scrub(settings=get_settings())


@celery_app.task(name="vigil.retention.worm_probe", acks_late=True, soft_time_limit=120,
                 time_limit=180)
def worm_probe_task() -> dict[str, str]:
    settings = get_settings()
    state = worm.probe(get_object_store(settings))
    with session_scope() as session:
        worm.record(session=session, state=state)
    return {"legal_hold": state.legal_hold, "detail": state.detail}


@worker_ready.connect
def _probe_at_start(**_kwargs: Any) -> None:
    """The WORM probe runs when a worker starts, then daily (beat)."""
    worm_probe_task.delay()
