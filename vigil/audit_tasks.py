"""Celery task of the audit trail: sign its head (vigil/audit.py).

``vigil.audit.checkpoint`` is sent by the beat schedule every 600 s
(``vigil/tasks.py``); ``vigil audit checkpoint`` runs the same procedure now. Each run
stores the newest checkpoint's copy if a run before it stopped short of that, signs
the head if it moved, commits, and then stores the new checkpoint's copy in the object
store (docs/design/audit.md, P1-P4). Idempotent: a head that has not moved is not
signed again, a copy already stored is left as it is. One at a time: a run that finds
another in progress skips.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.orm import Session

from retention import worm as retention_worm
from vigil import audit, keys
from vigil.catalog.models import Key
from vigil.db import session_scope
from vigil.objectstore import ObjectStore, get_object_store
from vigil.settings import Settings, get_settings
from vigil.tasks import celery_app

log = logging.getLogger("vigil.audit")

# pg_try_advisory_xact_lock key held by a checkpoint run ("vgaudcp"; not the append lock).
_RUN_LOCK: Final = 0x76_67_61_75_64_63_70


def run_checkpoint(*, session: Session, store: ObjectStore, provider: keys.KeyProvider,
                   settings: Settings, actor: str = "system") -> dict[str, Any]:
    """Sign the audit trail's head and store the copy. Commits ``session`` (the task and
    the CLI own it for this purpose).

    1. P1: take the run lock without waiting (held: skip); store the newest
       checkpoint's copy if it is missing.
    2. P2: ``audit.sign_checkpoint`` (under the append lock); nothing to sign: done.
    3. P3: commit: the row is durable and the append lock released.
    4. P4: store the copy (read back and compared), with an S3 legal hold when the
       latest WORM probe found holds enforced and ``VIGIL_OBJECT_LOCK`` is ``auto``.
    A stop between P3 and P4 leaves the newest row without a copy, which the next run
    stores (P1); verification allows that for ``audit.COPY_GRACE``."""
    if not session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                           {"k": _RUN_LOCK}).scalar_one():
        session.rollback()
        return {"skipped": "another checkpoint run is in progress"}
    hold = retention_worm.legal_holds_on(session, settings)
    repaired = audit.store_missing_copy(session=session, store=store, hold=hold)
    checkpoint = audit.sign_checkpoint(session=session, provider=provider, actor=actor)
    if checkpoint is None:
        session.commit()
        return {"signed": None, "stored_missing_copy": repaired}
    key = session.get(Key, checkpoint.key_id)
    assert key is not None and key.fingerprint is not None  # a signing key
    record = audit.checkpoint_record(checkpoint, key_fingerprint=key.fingerprint)
    session.commit()
    name = audit.store_copy(store=store, record=record, hold=hold)
    log.info("audit checkpoint #%d: events through #%d (%d), copy %s%s", checkpoint.id,
             checkpoint.event_id, checkpoint.events, name, " (legal hold)" if hold else "")
    return {"signed": checkpoint.id, "event_id": checkpoint.event_id,
            "events": checkpoint.events, "key_fingerprint": key.fingerprint, "copy": name,
            "legal_hold": hold, "stored_missing_copy": repaired}


# The first run walks the whole trail (without blocking appends); later runs walk what
# ten minutes appended. A run that overlaps the next finds the run lock and skips.
@celery_app.task(name="vigil.audit.checkpoint", acks_late=True, reject_on_worker_lost=True,
                 soft_time_limit=3300, time_limit=3600)
def checkpoint_task() -> dict[str, Any]:
    settings = get_settings()
    with session_scope() as session:
        return run_checkpoint(session=session, store=get_object_store(settings),
                              provider=keys.file_key_ring(settings.home_dir),
                              settings=settings)
