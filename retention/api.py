"""HTTP routes for retention rules, previews, holds and the storage's WORM state.

Admins set rules and release holds; investigators and admins place holds on the cases
they act on; auditors read rules, previews, holds and the WORM state.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from recorder.service import get_camera
from retention import service, worm
from retention.schemas import (
    HoldIn,
    HoldOut,
    PreviewOut,
    ReleaseIn,
    RuleIn,
    RuleOut,
    ScopeIn,
    WormOut,
)
from retrieval import cases
from vigil.auth.api import SessionDep, allow
from vigil.catalog.models import Principal, RoleName
from vigil.settings import get_settings

router = APIRouter(prefix="/api/v1", tags=["retention"])

_admins = allow(RoleName.ADMIN)
_overseers = allow(RoleName.ADMIN, RoleName.AUDITOR)
_holders = allow(RoleName.ADMIN, RoleName.INVESTIGATOR)
_readers = allow(RoleName.ADMIN, RoleName.INVESTIGATOR, RoleName.AUDITOR)


def _scope(body: ScopeIn) -> service.Scope:
    return service.Scope(camera=body.camera, region=body.region)


def _rules(session: SessionDep, principal: Principal) -> list[RuleOut]:
    return [RuleOut(scope=r.scope, keep_days=r.keep_days, updated_at=r.updated_at)
            for r in service.list_rules(session=session, principal=principal)]


@router.get("/retention/rules", response_model=list[RuleOut])
def list_rules(session: SessionDep,
               principal: Annotated[Principal, Depends(_overseers)]) -> list[RuleOut]:
    """The rules that can govern the caller's cameras."""
    return _rules(session, principal)


@router.put("/retention/rules", response_model=list[RuleOut])
def set_rule(body: RuleIn, session: SessionDep,
             principal: Annotated[Principal, Depends(_admins)]) -> list[RuleOut]:
    """Create or change the rule of one scope (never below the floor: 422)."""
    service.set_rule(session=session, scope=_scope(body), keep_days=body.keep_days,
                     floor_days=get_settings().retention_floor_days, principal=principal)
    session.commit()
    return _rules(session, principal)


@router.post("/retention/rules/remove", response_model=list[RuleOut])
def remove_rule(body: ScopeIn, session: SessionDep,
                principal: Annotated[Principal, Depends(_admins)]) -> list[RuleOut]:
    service.remove_rule(session=session, scope=_scope(body), principal=principal)
    session.commit()
    return _rules(session, principal)


@router.get("/retention/preview", response_model=list[PreviewOut])
def preview(session: SessionDep, principal: Annotated[Principal, Depends(_overseers)],
            camera: Annotated[str | None, Query()] = None) -> list[PreviewOut]:
    """What the next sweep deletes, per camera; nothing is deleted."""
    return [PreviewOut(camera=r.camera, rule=r.rule, keep_days=r.keep_days, chunks=r.chunks,
                       bytes=r.stored_bytes, start=r.start_at, end=r.end_at,
                       held_chunks=r.held_chunks)
            for r in service.preview(session=session, camera=camera, principal=principal,
                                     floor_days=get_settings().retention_floor_days)]


def _hold_out(h: service.HoldView) -> HoldOut:
    return HoldOut(id=h.id, case=h.case, camera=h.camera, start=h.start_at, end=h.end_at,
                   reason=h.reason, export_id=str(h.export_id) if h.export_id else None,
                   created_at=h.created_at, released_at=h.released_at,
                   release_reason=h.release_reason)


@router.get("/holds", response_model=list[HoldOut])
def list_holds(session: SessionDep, principal: Annotated[Principal, Depends(_readers)],
               case: Annotated[str | None, Query()] = None,
               camera: Annotated[str | None, Query()] = None,
               released: Annotated[bool, Query()] = False) -> list[HoldOut]:
    """Holds on the cameras of the caller's scope; an investigator sees those of the
    cases they are a member of."""
    return [_hold_out(h) for h in service.list_holds(
        session=session, case=case, camera=camera, include_released=released,
        principal=principal)]


@router.post("/cases/{reference}/holds", response_model=HoldOut, status_code=201)
def place_hold(reference: str, body: HoldIn, session: SessionDep,
               principal: Annotated[Principal, Depends(_holders)]) -> HoldOut:
    """Hold a camera's range for an open case (admins, and investigators who are its
    members): kept whatever the rules say until an admin releases it."""
    case = cases.acting_case(session=session, reference=reference, principal=principal)
    hold = service.place_hold(session=session, case=case,
                              camera=get_camera(session=session, name=body.camera,
                                                principal=principal),
                              start_at=body.start, end_at=body.end, reason=body.reason,
                              principal=principal)
    hold_id = hold.id
    session.commit()
    (view,) = service.list_holds(session=session, hold_id=hold_id)
    return _hold_out(view)


@router.post("/holds/{hold_id}/release", response_model=HoldOut)
def release_hold(hold_id: int, body: ReleaseIn, session: SessionDep,
                 principal: Annotated[Principal, Depends(_admins)]) -> HoldOut:
    service.release_hold(session=session, hold_id=hold_id, reason=body.reason,
                         principal=principal)
    session.commit()
    (view,) = service.list_holds(session=session, hold_id=hold_id, include_released=True)
    return _hold_out(view)


@router.get("/storage/worm", response_model=WormOut)
def worm_state(session: SessionDep,
               _principal: Annotated[Principal, Depends(_overseers)]) -> WormOut:
    """What the latest WORM probe found the object store to enforce."""
    state = worm.latest(session)
    mode = get_settings().object_lock
    if state is None:
        return WormOut(legal_hold="unknown", detail="no probe has run yet", probed_at=None,
                       object_lock=mode)
    return WormOut(legal_hold=state.legal_hold, detail=state.detail,
                   probed_at=state.probed_at, object_lock=mode)
