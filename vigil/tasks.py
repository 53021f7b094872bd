"""Celery: the app, the one base task every context's tasks derive from, the schedule.

The base task owns the database session (commit on success, rollback on failure),
acknowledges late so that a task whose worker dies is delivered again, and has
time limits. Tasks take ids, not objects, and must be idempotent: they may run
more than once. Enqueue only after the transaction that made the work commits.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Final

from celery import Celery, Task
from sqlalchemy import text
from sqlalchemy.orm import Session

from vigil.db import session_scope
from vigil.settings import Settings, get_settings

log = logging.getLogger("vigil.tasks")

# A task running longer than this is interrupted (soft) and then killed (hard).
SOFT_TIME_LIMIT_S: Final = 3300
HARD_TIME_LIMIT_S: Final = 3600

celery_app = Celery("vigil")

# Periodic work, declared in code. Later issues add the storage reconciler, the
# retention sweeper, the WORM probe and the integrity scrub here.
BEAT_SCHEDULE: Final[dict[str, dict[str, Any]]] = {
    # Exports whose worker died (lease expired) go to a worker again.
    "resume-exports": {"task": "vigil.export.resume", "schedule": 15.0},
    # Expired footage is deleted in batches (retention/sweep.py).
    "sweep": {"task": "vigil.retention.sweep", "schedule": 300.0},
    # S3 legal holds follow the catalog's holds (retention/worm.py).
    "legal-holds": {"task": "vigil.retention.legal_holds", "schedule": 60.0},
    # Data keys still wrapped by a retired KEK are re-wrapped (vigil/keys.py).
    "rewrap": {"task": "vigil.keys.rewrap", "schedule": 60.0},
    # A sample of the stored chunks is re-read and checked (retention/scrub.py).
    "scrub": {"task": "vigil.retention.scrub", "schedule": 86_400.0},
    # What the object store really enforces (retention/worm.py).
    "worm-probe": {"task": "vigil.retention.worm_probe", "schedule": 86_400.0},
    # The audit trail's head is signed, so that truncation is provable (vigil/audit.py).
    "audit-checkpoint": {"task": "vigil.audit.checkpoint", "schedule": 600.0},
    # Revocations of OIDC tokens that have expired anyway are forgotten (vigil/auth/oidc.py).
    "prune-revoked-jwts": {"task": "vigil.auth.prune_revoked", "schedule": 3600.0},
}
# Modules whose tasks a worker registers at start.
TASK_MODULES: Final = ["retrieval.tasks", "retention.tasks", "vigil.key_tasks",
                       "vigil.audit_tasks", "vigil.auth.tasks"]


def configure(settings: Settings | None = None) -> Celery:
    """Point the app at the configured broker (done lazily: the embedded stack's
    credentials exist only after `vigil stack up`)."""
    settings = settings or get_settings()
    broker = settings.celery_broker_url()
    celery_app.conf.update(
        broker_url=broker,
        result_backend=_result_backend(broker),
        result_expires=86400,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=SOFT_TIME_LIMIT_S,
        task_time_limit=HARD_TIME_LIMIT_S,
        broker_connection_retry_on_startup=True,
        # Redis re-delivers an unacknowledged task after this many seconds.
        broker_transport_options={"visibility_timeout": HARD_TIME_LIMIT_S + 300},
        worker_hijack_root_logger=False,
        beat_schedule=BEAT_SCHEDULE,
        include=TASK_MODULES,
        timezone="UTC",
        enable_utc=True,
    )
    return celery_app


def _result_backend(broker: str) -> str:
    """Results in the broker's Redis (database 1), or over AMQP replies for RabbitMQ.

    Results are conveniences (progress lives in the catalog), kept one day."""
    if broker.startswith(("redis://", "rediss://")):
        base, _, db = broker.rpartition("/")
        return f"{base}/1" if db.isdigit() else broker
    return "rpc://"


class VigilTask(Task):
    """Base task: ``run_with_session(session, ...)`` inside one transaction."""

    abstract = True
    acks_late = True
    autoretry_for: tuple[type[BaseException], ...] = ()
    max_retries = 5
    retry_backoff = True
    retry_backoff_max = 300

    def run_with_session(self, session: Session, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def run(self, *args: Any, **kwargs: Any) -> Any:
        with session_scope() as session:
            return self.run_with_session(session, *args, **kwargs)


class Ping(VigilTask):
    """Round trip through broker, worker and database; `make run` and tests use it."""

    name = "vigil.ping"

    def run_with_session(self, session: Session, *args: Any, **kwargs: Any) -> Any:
        db_now = session.execute(text("SELECT now()")).scalar_one()
        return {"worker": socket.gethostname(), "db_time": db_now.isoformat()}


ping = celery_app.register_task(Ping())
