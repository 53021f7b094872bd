"""Celery tasks of the retrieval context: building export packages.

``vigil.export.build`` is acknowledged late and rejected (so re-queued) when its
worker dies; ``run_export``'s lease makes a second delivery harmless. A worker that
dies mid-export leaves a lease that expires, and an outage (object store, database,
timestamp authority) makes the worker give the lease up with a hold:
``vigil.export.resume``, run by the beat schedule every 15 s, hands such exports (and
queued ones whose message was lost) to a worker again.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import Any, Final

from celery import Task
from sqlalchemy.exc import DBAPIError

from retrieval import exports
from vigil.db import get_engine
from vigil.errors import StorageError
from vigil.settings import get_settings
from vigil.tasks import celery_app

log = logging.getLogger("vigil.exports")

# A queued export older than this whose message never reached a worker is re-sent.
QUEUED_RESEND_AFTER: Final = timedelta(minutes=5)


class BuildExport(Task):
    name = "vigil.export.build"
    acks_late = True
    reject_on_worker_lost = True

    def run(self, export_id: str, *args: Any, **kwargs: Any) -> str:
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        try:
            outcome = exports.run_export(settings=get_settings(),
                                         export_id=uuid.UUID(export_id), owner=owner)
        except (StorageError, DBAPIError) as exc:
            # An outage: run_export gave the lease up with a hold (RETRY_HOLD), and
            # vigil.export.resume sends the export again once it has passed.
            log.warning("export %s: %s: %s; it is tried again in %.0f s or more", export_id,
                        type(exc).__name__, exc, exports.RETRY_HOLD.total_seconds())
            return "retrying"
        log.info("export %s: %s", export_id, outcome)
        return outcome


class ResumeExports(Task):
    name = "vigil.export.resume"

    def run(self, *args: Any, **kwargs: Any) -> int:
        stalled = exports.stalled_exports(get_engine(), older_than=QUEUED_RESEND_AFTER)
        for export_id in stalled:
            log.info("export %s: stalled; handing it to a worker again", export_id)
            build_export.delay(str(export_id))
        return len(stalled)


build_export = celery_app.register_task(BuildExport())
resume_exports = celery_app.register_task(ResumeExports())
