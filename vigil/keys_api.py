"""HTTP routes for keys: the published public keys and rotation."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["keys"])
