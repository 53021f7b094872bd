"""HTTP routes of the recorder context: thin, all logic in ``service``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import select

from recorder import health, service
from recorder.schemas import CameraHealthOut, CameraIn, CameraOut, CameraPatch, RegionHealthOut
from vigil.auth import scope
from vigil.auth.api import SessionDep, allow
from vigil.catalog.models import Camera, Principal, Region, RoleName
from vigil.redact import redact_url

router = APIRouter(prefix="/api/v1", tags=["cameras"])

_readers = allow(RoleName.ADMIN, RoleName.INVESTIGATOR, RoleName.AUDITOR)
_admins = allow(RoleName.ADMIN)


def _out(camera: Camera) -> CameraOut:
    return CameraOut.model_validate(camera).model_copy(
        update={"source_url": redact_url(camera.source_url)})


@router.get("/cameras", response_model=list[CameraOut])
def list_cameras(session: SessionDep,
                 principal: Annotated[Principal, Depends(_readers)]) -> list[CameraOut]:
    """The cameras in the caller's scope."""
    return [_out(c) for c in service.list_cameras(session=session, principal=principal)]


@router.post("/cameras", response_model=CameraOut, status_code=201)
def add_camera(body: CameraIn, session: SessionDep,
               principal: Annotated[Principal, Depends(_admins)]) -> CameraOut:
    """Register a camera; the recorders pick it up within seconds."""
    camera = service.add_camera(session=session, name=body.name, url=body.url,
                                region_code=body.region, chunk_seconds=body.chunk_seconds,
                                actor=principal.name, principal=principal)
    session.commit()
    return _out(camera)


@router.patch("/cameras/{name}", response_model=CameraOut)
def update_camera(name: str, body: CameraPatch, session: SessionDep,
                  principal: Annotated[Principal, Depends(_admins)]) -> CameraOut:
    """Change what may change of a camera: whether it is sensitive."""
    camera = service.set_sensitive(session=session, name=name, sensitive=body.sensitive,
                                   actor=principal.name, principal=principal)
    session.commit()
    return _out(camera)


# --- recording health ----------------------------------------------------------------


def _health_report(session: SessionDep, principal: Principal, day: str | None, tz: str | None,
                   region: str | None) -> health.HealthReport:
    reach = scope.scope_of(session, principal)
    if region is not None:  # a region outside the scope answers as absent, audited
        found = session.scalars(select(Region).where(Region.code == region)).one_or_none()
        if found is not None:
            scope.check_region(session, principal, found, region)
    return health.daily_report(session=session, day=day, tz=tz, region_code=region,
                               scope_region_id=principal.region_id,
                               scope_cameras=reach.camera_ids)


@router.get("/health/cameras", response_model=list[CameraHealthOut], tags=["health"])
def camera_health(session: SessionDep, principal: Annotated[Principal, Depends(_readers)],
                  day: str | None = None, tz: str | None = None,
                  region: str | None = None) -> list[CameraHealthOut]:
    """Per camera for ``day`` (YYYY-MM-DD, default today) in ``tz`` (IANA, default UTC),
    within the caller's scope and optionally a region's subtree (by code)."""
    report = _health_report(session, principal, day, tz, region)
    return [CameraHealthOut(
        id=c.camera_id, name=c.name, region_id=c.region_id, status=c.status,
        last_chunk_end_at=c.last_chunk_end_at, completeness_day=c.completeness_day,
        completeness_by_hour=list(c.completeness_by_hour), online_fraction=c.online_fraction,
        counted=c.counted, online=c.online, good=c.good) for c in report.cameras]


@router.get("/health/regions", response_model=list[RegionHealthOut], tags=["health"])
def region_health(session: SessionDep, principal: Annotated[Principal, Depends(_readers)],
                  day: str | None = None, tz: str | None = None,
                  region: str | None = None) -> list[RegionHealthOut]:
    """The overall row (region_id null) then every region subtree holding cameras."""
    report = _health_report(session, principal, day, tz, region)
    return [RegionHealthOut(
        region_id=None if g.region is None else g.region.id,
        code=None if g.region is None else g.region.code,
        name=None if g.region is None else g.region.name,
        cameras=g.cameras, online=g.online, online_rate=g.online_rate, good=g.good,
        good_rate=g.good_rate, mean_completeness=g.mean_completeness,
        online_fraction=g.online_fraction, meets_target=g.meets_target)
        for g in report.groups]
