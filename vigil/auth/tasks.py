"""Celery tasks of authentication. Beat schedules are declared in ``vigil/tasks.py``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from vigil.auth import oidc
from vigil.db import session_scope
from vigil.tasks import celery_app


@celery_app.task(name="vigil.auth.prune_revoked", acks_late=True, soft_time_limit=120,
                 time_limit=180)
def prune_revoked_task() -> dict[str, Any]:
    """Forget revocations of OIDC tokens that have expired anyway (idempotent)."""
    with session_scope() as session:
        pruned = oidc.prune_revoked(session=session, now=datetime.now(UTC))
    return {"pruned": pruned}
