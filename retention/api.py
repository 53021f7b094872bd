"""HTTP routes for retention rules, previews, holds and the storage's WORM state."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["retention"])
