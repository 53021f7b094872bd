"""API shapes of the retrieval context."""

from __future__ import annotations

from pydantic import BaseModel


class Health(BaseModel):
    status: str


class WhoAmI(BaseModel):
    id: int
    name: str
    role: str
    region_id: int | None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody
