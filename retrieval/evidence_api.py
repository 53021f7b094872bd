"""HTTP routes for evidence: timelines, cases, exports, downloads, verification.

Thin: the logic lives in ``cases``, ``exports``, ``timeline`` and ``verify``. Who may
do what: investigators and admins open cases, export and download; auditors read
cases, custody records and timelines and verify packages; everyone who reads
footage metadata is an admin, investigator or auditor.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from recorder.service import get_camera
from retrieval import approval, cases, exports, preview
from retrieval.limits import heavy_request
from retrieval.schemas import (
    CaseIn,
    CaseOut,
    CloseIn,
    CustodyEventOut,
    CustodyOut,
    DecisionIn,
    ExportIn,
    ExportOut,
    FailureOut,
    GapOut,
    MemberIn,
    PolicyIn,
    PolicyOut,
    SpanOut,
    TimelineOut,
    VerifyOut,
)
from retrieval.timeline import timeline, window_of
from vigil import audit, custody
from vigil.auth.api import SessionDep, allow
from vigil.catalog.models import Case, Export, Principal, RoleName
from vigil.errors import InvalidInput, VigilError
from vigil.settings import get_settings

router = APIRouter(prefix="/api/v1", tags=["evidence"])

_readers = allow(RoleName.ADMIN, RoleName.INVESTIGATOR, RoleName.AUDITOR)
_investigators = allow(RoleName.ADMIN, RoleName.INVESTIGATOR)
_verifiers = allow(RoleName.ADMIN, RoleName.INVESTIGATOR, RoleName.AUDITOR)
_approvers = allow(RoleName.ADMIN)
_overseers = allow(RoleName.ADMIN, RoleName.AUDITOR)

UPLOAD_BLOCK: Final = 1 << 20


class TooLarge(VigilError):
    http_status = 413
    code = "too_large"


# --- timeline --------------------------------------------------------------------------


@router.get("/cameras/{name}/timeline", response_model=TimelineOut)
def camera_timeline(name: str, session: SessionDep,
                    principal: Annotated[Principal, Depends(_readers)],
                    start: Annotated[str | None, Query(alias="from")] = None,
                    end: Annotated[str | None, Query(alias="to")] = None) -> TimelineOut:
    """Recorded ranges and gaps of a camera over [start, end) (ISO 8601 with offsets;
    default the last day)."""
    camera = get_camera(session=session, name=name, principal=principal)
    line = timeline(session, camera_id=camera.id, window=window_of(start, end))
    _viewed(session, principal, "timeline.view", "camera", str(camera.id),
            {"from": line.window.start.isoformat(), "to": line.window.end.isoformat()})
    return TimelineOut(camera=camera.name, start=line.window.start, end=line.window.end,
                       recorded=[SpanOut(start=s.start, end=s.end) for s in line.recorded],
                       gaps=[GapOut(start=g.span.start, end=g.span.end, cause=g.cause)
                             for g in line.gaps])


@router.get("/cameras/{name}/clip", response_class=FileResponse,
            dependencies=[Depends(heavy_request)])
def camera_clip(name: str, session: SessionDep,
                principal: Annotated[Principal, Depends(_investigators)],
                start: Annotated[str, Query(alias="from")],
                end: Annotated[str, Query(alias="to")]) -> FileResponse:
    """A preview: the camera's footage over [start, end) as one frame-accurate MP4
    (stream copy, at most 30 min), with HTTP Range support so that a player can seek.
    Not evidence (export for that); audited."""
    camera = get_camera(session=session, name=name, principal=principal)
    tmp = Path(tempfile.mkdtemp(prefix="vigil-preview-"))
    try:
        path = preview.build_preview(session=session, settings=get_settings(), camera=camera,
                                     span=window_of(start, end), principal=principal,
                                     workdir=tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FileResponse(path, media_type="video/mp4",
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


def _viewed(session: SessionDep, principal: Principal, action: str, target_type: str,
            target_id: str, detail: dict[str, object] | None = None) -> None:
    """Reads of footage metadata and case records are audited (and committed)."""
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action=action, target_type=target_type, target_id=target_id, detail=detail)
    session.commit()


# --- cases ---------------------------------------------------------------------------


def _case_out(session: SessionDep, case: Case) -> CaseOut:
    return CaseOut(reference=case.reference, title=case.title, description=case.description,
                   status=case.status.value, created_at=case.created_at,
                   closed_at=case.closed_at, members=cases.members(session=session, case=case))


@router.post("/cases", response_model=CaseOut, status_code=201)
def create_case(body: CaseIn, session: SessionDep,
                principal: Annotated[Principal, Depends(_investigators)]) -> CaseOut:
    case = cases.create_case(session=session, title=body.title, reference=body.reference,
                             description=body.description, principal=principal)
    session.commit()
    return _case_out(session, case)


@router.get("/cases", response_model=list[CaseOut])
def list_cases(session: SessionDep,
               principal: Annotated[Principal, Depends(_readers)]) -> list[CaseOut]:
    return [_case_out(session, c) for c in cases.list_cases(session=session,
                                                             principal=principal)]


@router.get("/cases/{reference}", response_model=CaseOut)
def get_case(reference: str, session: SessionDep,
             principal: Annotated[Principal, Depends(_readers)]) -> CaseOut:
    case = cases.get_case(session=session, reference=reference, principal=principal)
    _viewed(session, principal, "case.view", "case", case.reference)
    return _case_out(session, case)


@router.post("/cases/{reference}/close", response_model=CaseOut)
def close_case(reference: str, body: CloseIn, session: SessionDep,
               principal: Annotated[Principal, Depends(_investigators)]) -> CaseOut:
    case = cases.close_case(session=session, reference=reference, principal=principal,
                            reason=body.reason)
    session.commit()
    return _case_out(session, case)


@router.post("/cases/{reference}/members", response_model=CaseOut, status_code=201)
def add_member(reference: str, body: MemberIn, session: SessionDep,
               principal: Annotated[Principal, Depends(_investigators)]) -> CaseOut:
    cases.add_member(session=session, reference=reference, principal=principal,
                     member_name=body.principal)
    session.commit()
    return _case_out(session, cases.get_case(session=session, reference=reference,
                                             principal=principal))


@router.get("/cases/{reference}/custody", response_model=CustodyOut)
def case_custody(reference: str, session: SessionDep,
                 principal: Annotated[Principal, Depends(_readers)]) -> CustodyOut:
    """The case's chain-of-custody record, and whether its hash chain re-computes. The
    details of events about cameras outside the caller's scope are redacted; the
    events and their hashes are all there."""
    case = cases.get_case(session=session, reference=reference, principal=principal)
    _viewed(session, principal, "custody.view", "case", case.reference)
    log = cases.custody_log(session=session, case=case)
    try:
        custody.verify_events(log)
        verified = True
    except custody.CustodyChainBroken:
        verified = False
    details = cases.visible_details(session=session, case=case, principal=principal, log=log)
    return CustodyOut(case=case.reference, verified=verified, events=[
        CustodyEventOut(seq=e.seq, at=cases.at_of(e), actor=e.actor, action=e.action,
                        export_id=e.export_id, detail=detail,
                        prev_hash=e.prev_hash.hex(), hash=h.hex())
        for (e, h), detail in zip(log, details, strict=True)])


# --- exports -------------------------------------------------------------------------


def _export_out(export: Export, case: Case) -> ExportOut:
    return ExportOut(id=str(export.id), case=case.reference, status=export.status.value,
                     stage=export.stage, progress_pct=export.progress_pct,
                     purpose=export.purpose, recipient=export.recipient, error=export.error,
                     package_sha256=None if export.package_sha256 is None
                     else export.package_sha256.hex(),
                     package_bytes=export.package_bytes, created_at=export.created_at,
                     finished_at=export.finished_at, approval=export.approval.value,
                     approval_reason=export.approval_reason,
                     decision_note=export.decision_note)


@router.post("/cases/{reference}/exports", response_model=ExportOut, status_code=202,
             dependencies=[Depends(heavy_request)])
def request_export(reference: str, body: ExportIn, session: SessionDep,
                   principal: Annotated[Principal, Depends(_investigators)]) -> ExportOut:
    """Queue an export of camera ranges for the case; poll its status, then download."""
    export = exports.request_export(
        session=session, reference=reference, purpose=body.purpose, recipient=body.recipient,
        principal=principal,
        items=[exports.ItemRequest(camera=i.camera, start_at=i.start, end_at=i.end)
               for i in body.items])
    session.commit()
    exports.enqueue(export.id)
    export_row, case = exports.get_export(session=session, export_id=export.id,
                                          principal=principal)
    return _export_out(export_row, case)


@router.get("/exports/{export_id}", response_model=ExportOut)
def get_export(export_id: str, session: SessionDep,
               principal: Annotated[Principal, Depends(_readers)]) -> ExportOut:
    export, case = exports.get_export(session=session, export_id=export_id,
                                      principal=principal)
    return _export_out(export, case)


@router.get("/exports/{export_id}/package", response_class=FileResponse,
            dependencies=[Depends(heavy_request)])
def download_package(export_id: str, request: Request, session: SessionDep,
                     principal: Annotated[Principal, Depends(_investigators)]) -> FileResponse:
    """The package (a zip), checked against its recorded hash; every download is a
    custody event. Supports HTTP Range, so a broken download can resume: a request for
    a range that does not start at byte 0 continues a download already recorded."""
    ranged = (request.headers.get("range") or "").replace(" ", "")
    export, case = exports.get_export(session=session, export_id=export_id,
                                      principal=principal)
    tmp = Path(tempfile.mkdtemp(prefix="vigil-download-"))
    try:
        path = exports.download_package(session=session, settings=get_settings(),
                                        export=export, case=case, principal=principal,
                                        dst=tmp / "package.zip", via="api",
                                        record=not ranged or ranged.startswith("bytes=0-"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FileResponse(path, media_type="application/zip",
                        filename=f"vigil-export-{export.id}.zip",
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


def _decide(export_id: str, body: DecisionIn, session: SessionDep, principal: Principal,
            approve: bool) -> ExportOut:
    export, case = exports.get_export(session=session, export_id=export_id,
                                      principal=principal)
    approval.decide(session=session, export=export, case=case, principal=principal,
                    approve=approve, note=body.note)
    session.commit()
    return _export_out(export, case)


@router.post("/exports/{export_id}/approve", response_model=ExportOut)
def approve_export(export_id: str, body: DecisionIn, session: SessionDep,
                   principal: Annotated[Principal, Depends(_approvers)]) -> ExportOut:
    """Release a package that awaits approval: an admin other than its requester, whose
    scope covers every camera of the export."""
    return _decide(export_id, body, session, principal, approve=True)


@router.post("/exports/{export_id}/reject", response_model=ExportOut)
def reject_export(export_id: str, body: DecisionIn, session: SessionDep,
                  principal: Annotated[Principal, Depends(_approvers)]) -> ExportOut:
    """Refuse a package that awaits approval; it is never released."""
    return _decide(export_id, body, session, principal, approve=False)


@router.get("/approvals", response_model=list[ExportOut])
def pending_approvals(session: SessionDep,
                      principal: Annotated[Principal, Depends(_approvers)]) -> list[ExportOut]:
    """Exports awaiting approval that the caller may decide on."""
    return [_export_out(e, c) for e, c in approval.pending(session=session,
                                                           principal=principal)]


@router.get("/approval/policies", response_model=list[PolicyOut])
def list_policies(session: SessionDep,
                  principal: Annotated[Principal, Depends(_overseers)]) -> list[PolicyOut]:
    return [PolicyOut(scope=p.scope, max_duration_s=p.max_duration_s,
                      sensitive_cameras=p.sensitive_cameras, updated_at=p.updated_at)
            for p in approval.list_policies(session=session, principal=principal)]


@router.put("/approval/policies", response_model=list[PolicyOut])
def set_policy(body: PolicyIn, session: SessionDep,
               principal: Annotated[Principal, Depends(_approvers)]) -> list[PolicyOut]:
    """Create or change the approval policy of a region (by code) or, without one, the
    default (system-wide principals only)."""
    approval.set_policy(session=session, principal=principal, region_code=body.region,
                        max_duration_s=body.max_duration_s,
                        sensitive_cameras=body.sensitive_cameras)
    session.commit()
    return list_policies(session, principal)


# --- verification ----------------------------------------------------------------------


@router.post("/verify", response_model=VerifyOut, dependencies=[Depends(heavy_request)])
async def verify_upload(request: Request, session: SessionDep,
                        principal: Annotated[Principal, Depends(_verifiers)]) -> VerifyOut:
    """Verify a package sent as the request body (``Content-Type: application/zip``),
    as ``vigil verify`` does offline. Oversized uploads, zip-slip paths and zip bombs
    are refused with a clear error."""
    from starlette.concurrency import run_in_threadpool

    from retrieval import verify

    limit = get_settings().verify_upload_max_mb * 1024 * 1024
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"a package upload is at most {limit // (1024 * 1024)} MB")
    tmp = Path(tempfile.mkdtemp(prefix="vigil-verify-"))
    try:
        received, digest = 0, hashlib.sha256()
        with open(tmp / "package.zip", "wb") as out:
            async for block in request.stream():
                received += len(block)
                digest.update(block)
                if received > limit:
                    raise TooLarge(f"a package upload is at most {limit // (1024 * 1024)} MB")
                out.write(block)
        if received == 0:
            raise InvalidInput("send the package as the request body")
        report = await run_in_threadpool(verify.verify_package, tmp / "package.zip")
        await run_in_threadpool(
            _viewed, session, principal, "package.verify", "package", digest.hexdigest(),
            {"ok": report.ok, "failures": [f"{f.file}: {f.check}" for f in report.failures],
             "bytes": received})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return VerifyOut(ok=report.ok, checks=report.checks,
                     failures=[FailureOut(file=f.file, check=f.check, message=f.message)
                               for f in report.failures])
