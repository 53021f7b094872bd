"""Celery tasks of the retention context: the sweeper, the scrub, the WORM probe."""

from __future__ import annotations
