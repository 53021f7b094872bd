"""HTTP routes of the recorder context: thin, all logic in ``service``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from recorder import service
from recorder.schemas import CameraOut
from vigil.auth.api import SessionDep, allow
from vigil.catalog.models import Principal, RoleName
from vigil.redact import redact_url

router = APIRouter(prefix="/api/v1", tags=["cameras"])

_readers = allow(RoleName.ADMIN, RoleName.INVESTIGATOR, RoleName.AUDITOR)


@router.get("/cameras", response_model=list[CameraOut])
def list_cameras(session: SessionDep,
                 _principal: Annotated[Principal, Depends(_readers)]) -> list[CameraOut]:
    return [CameraOut.model_validate(c).model_copy(update={"source_url":
                                                           redact_url(c.source_url)})
            for c in service.list_cameras(session=session)]
