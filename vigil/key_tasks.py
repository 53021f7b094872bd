"""Celery tasks for keys: re-wrapping data keys after a KEK rotation."""

from __future__ import annotations
