"""Celery tasks for keys: re-wrapping data keys after a KEK rotation.

``vigil.keys.rewrap`` is sent by the beat schedule every 60 s (``vigil/tasks.py``).
It re-wraps data keys in batches, each committed on its own, for at most
``REWRAP_BUDGET_S``, then destroys the retired KEKs that nothing needs any more
(``keys.destroy_unneeded_keks``). Idempotent and safe to run twice at once: a batch
takes its rows ``FOR UPDATE SKIP LOCKED``, and a crash loses at most the batch in
flight, whose data keys stay wrapped under their old KEK, which is kept while any
data key needs it (docs/design/keys.md, RW1-RW4, K5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from celery import Task
from sqlalchemy.orm import Session

from vigil import keys
from vigil.db import session_scope
from vigil.settings import get_settings
from vigil.tasks import celery_app

log = logging.getLogger("vigil.keys")

# Data keys re-wrapped per transaction: small enough that a batch holds its row locks
# for well under a second, large enough that the commit is not the cost.
REWRAP_BATCH: Final = 500
# A run stops starting batches after this long, so that it ends before the beat sends
# the next one (every 60 s); what is left is taken by the next run.
REWRAP_BUDGET_S: Final = 50.0


@dataclass
class RewrapOutcome:
    rewrapped: int = 0
    remaining: int = 0
    destroyed_versions: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"rewrapped": self.rewrapped, "remaining": self.remaining,
                "destroyed_kek_versions": self.destroyed_versions}


def rewrap_all(*, session: Session, provider: keys.KeyProvider, actor: str,
               budget_s: float | None = None, batch: int = REWRAP_BATCH,
               on_batch: Callable[[int], None] | None = None) -> RewrapOutcome:
    """Re-wrap batch after batch, committing each, until none is left or ``budget_s``
    has passed; then destroy the KEKs nothing needs. Commits ``session`` (the task and
    the CLI own it for this purpose); ``on_batch`` is told each batch's count."""
    outcome = RewrapOutcome()
    deadline = None if budget_s is None else time.monotonic() + budget_s
    while deadline is None or time.monotonic() < deadline:
        done = keys.rewrap_batch(session=session, provider=provider, limit=batch)
        session.commit()
        if not done:
            break
        outcome.rewrapped += done
        if on_batch is not None:
            on_batch(done)
    destroyed = keys.destroy_unneeded_keks(session=session, provider=provider, actor=actor)
    outcome.destroyed_versions = [k.version for k in destroyed]
    session.commit()
    outcome.remaining = keys.pending_rewrap(session=session)
    return outcome


class RewrapKeys(Task):
    name = "vigil.keys.rewrap"
    acks_late = True
    reject_on_worker_lost = True
    # Well past the budget; a run killed here loses at most its batch in flight.
    soft_time_limit = 240
    time_limit = 300

    def run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        provider = keys.file_key_ring(get_settings().home_dir)
        with session_scope() as session:
            outcome = rewrap_all(session=session, provider=provider, actor="system",
                                 budget_s=REWRAP_BUDGET_S)
        if outcome.rewrapped or outcome.destroyed_versions:
            log.info("keys: %d data key(s) re-wrapped, %d left; retired KEK version(s) "
                     "destroyed: %s", outcome.rewrapped, outcome.remaining,
                     outcome.destroyed_versions or "none")
        return outcome.as_dict()


rewrap_keys = celery_app.register_task(RewrapKeys())
