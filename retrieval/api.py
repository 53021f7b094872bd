"""HTTP routes of the retrieval context."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from retrieval.schemas import WhoAmI
from vigil.auth.api import allow
from vigil.catalog.models import Principal, RoleName

router = APIRouter(prefix="/api/v1", tags=["session"])

_anyone = allow(*RoleName)
_api_readers = allow(RoleName.ADMIN, RoleName.INVESTIGATOR, RoleName.AUDITOR)


@router.get("/whoami", response_model=WhoAmI)
def whoami(principal: Annotated[Principal, Depends(_anyone)]) -> WhoAmI:
    return WhoAmI(id=principal.id, name=principal.name, role=principal.role,
                  region_id=principal.region_id)


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request,
            _principal: Annotated[Principal, Depends(_api_readers)]) -> dict[str, Any]:
    """The API's OpenAPI schema, for authenticated clients only."""
    return request.app.openapi()
