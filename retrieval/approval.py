"""Export approval: some packages are released only after a second person agrees.

An export needs approval when any policy that applies to any of its cameras says so:
its footage (summed over its items) is longer than the policy's ``max_duration_s``,
or it includes a camera marked sensitive and the policy covers sensitive cameras.
The policies of a camera are those of every region up its tree and the default
(``approval_policies.region_id`` NULL), all applied: a lower tier can tighten what a
higher one set, never loosen it. With no policy at all, sensitive cameras still need
approval and no length does.

The decision is taken when the export is requested and recorded on the export
(``approval``, ``approval_reason``). The package is built at once (its content does
not depend on the decision) but not released: downloads answer 409 until an
approver approves it. Approvers are admins whose scope covers every camera of the
export, other than the requester. Approval and rejection are custody events of the
case and audit events (docs/design/access.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from retrieval import cases
from vigil import audit
from vigil.auth import scope
from vigil.catalog.models import (
    ApprovalPolicy,
    ApprovalState,
    Camera,
    Case,
    Export,
    ExportItem,
    Principal,
    Region,
    RoleName,
)
from vigil.errors import Conflict, Forbidden, InvalidInput, NotFound

MAX_NOTE_CHARS: Final = 1000
# The longest length limit a policy may name: an export holds at most days of footage.
MAX_POLICY_S: Final = 10 * 86400


# --- the rule (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    max_duration_s: int | None
    sensitive_cameras: bool
    scope: str  # "region <code>" or "default" or "built-in"


# What applies where no policy is set: sensitive cameras need approval, no length does.
BUILT_IN: Final = Policy(max_duration_s=None, sensitive_cameras=True, scope="built-in")


@dataclass(frozen=True)
class PolicySet:
    by_region: Mapping[int, Policy]
    default: Policy | None


@dataclass(frozen=True)
class ItemFacts:
    camera: str
    region_path: str | None
    sensitive: bool
    duration: timedelta


def applicable(policies: PolicySet, region_path: str | None) -> list[Policy]:
    """The policies of a camera in the region at ``region_path`` (ids, "1/5/9/"): the
    nearest region's first, up to the default; the built-in one if there are none."""
    found = []
    if region_path:
        for part in reversed([p for p in region_path.strip("/").split("/") if p]):
            if (policy := policies.by_region.get(int(part))) is not None:
                found.append(policy)
    if policies.default is not None:
        found.append(policies.default)
    return found or [BUILT_IN]


def reasons(policies: PolicySet, items: Sequence[ItemFacts]) -> list[str]:
    """Why an export of ``items`` needs approval (empty: it does not)."""
    total = sum((i.duration for i in items), timedelta(0))
    found: list[str] = []

    def add(reason: str) -> None:
        if reason not in found:
            found.append(reason)
    for item in items:
        for policy in applicable(policies, item.region_path):
            if policy.sensitive_cameras and item.sensitive:
                add(f"camera {item.camera} is sensitive ({policy.scope})")
            limit = policy.max_duration_s
            if limit is not None and total > timedelta(seconds=limit):
                add(f"{total.total_seconds() / 60:g} min of footage is more than "
                    f"{limit / 60:g} min ({policy.scope})")
    return found


# --- policies ------------------------------------------------------------------------


def load_policies(session: Session) -> PolicySet:
    by_region: dict[int, Policy] = {}
    default = None
    for row, code in session.execute(
            select(ApprovalPolicy, Region.code).outerjoin(
                Region, Region.id == ApprovalPolicy.region_id)).all():
        if row.region_id is None:
            default = Policy(row.max_duration_s, row.sensitive_cameras, "default")
        else:
            by_region[row.region_id] = Policy(row.max_duration_s, row.sensitive_cameras,
                                              f"region {code}")
    return PolicySet(by_region=by_region, default=default)


@dataclass(frozen=True)
class PolicyView:
    scope: str
    max_duration_s: int | None
    sensitive_cameras: bool
    updated_at: datetime


def _region(session: Session, principal: Principal, code: str | None) -> Region | None:
    if code is None:
        scope.require_whole(session, principal, "the default approval policy")
        return None
    scope.require_region_authority(session, principal, "approval policies")
    region = session.scalars(select(Region).where(Region.code == code)).one_or_none()
    if region is None:
        raise NotFound(f"region {code!r} does not exist")
    return scope.check_region(session, principal, region, code)


def set_policy(*, session: Session, principal: Principal, region_code: str | None,
               max_duration_s: int | None, sensitive_cameras: bool) -> ApprovalPolicy:
    """Create or change the policy of a region (or the default); audited."""
    if max_duration_s is not None and not 0 < max_duration_s <= MAX_POLICY_S:
        raise InvalidInput(f"max_duration_s must be 1 to {MAX_POLICY_S} (or null: no length "
                           "limit)")
    region = _region(session, principal, region_code)
    region_id = None if region is None else region.id
    row = session.scalars(select(ApprovalPolicy).where(
        ApprovalPolicy.region_id.is_(None) if region_id is None
        else ApprovalPolicy.region_id == region_id)).one_or_none()
    before = None if row is None else {"max_duration_s": row.max_duration_s,
                                       "sensitive_cameras": row.sensitive_cameras}
    if row is None:
        row = ApprovalPolicy(region_id=region_id, created_by=principal.id)
        session.add(row)
    row.max_duration_s = max_duration_s
    row.sensitive_cameras = sensitive_cameras
    row.updated_at = text("now()")  # type: ignore[assignment]
    session.flush()
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action="approval.policy_set", target_type="approval_policy",
                 target_id=region_code or "default",
                 detail={"max_duration_s": max_duration_s,
                         "sensitive_cameras": sensitive_cameras, "before": before})
    return row


def list_policies(*, session: Session, principal: Principal) -> list[PolicyView]:
    """The default policy and those of the regions in the principal's subtree."""
    reach = scope.scope_of(session, principal)
    rows = session.execute(
        select(ApprovalPolicy, Region.code, Region.path).outerjoin(
            Region, Region.id == ApprovalPolicy.region_id)
        .order_by(ApprovalPolicy.region_id.is_not(None), Region.code)).all()
    return [PolicyView(scope="default" if code is None else f"region {code}",
                       max_duration_s=row.max_duration_s,
                       sensitive_cameras=row.sensitive_cameras, updated_at=row.updated_at)
            for row, code, path in rows if code is None or reach.covers_region_path(path)]


# --- decisions -----------------------------------------------------------------------


def facts_of(session: Session, items: Iterable[tuple[Camera, timedelta]]) -> list[ItemFacts]:
    return [ItemFacts(camera=c.name, region_path=scope.region_path_of(session, c.region_id),
                      sensitive=c.sensitive, duration=d) for c, d in items]


def decide_at_request(*, session: Session, export: Export,
                      items: Iterable[tuple[Camera, timedelta]]) -> list[str]:
    """Set the export's approval state from the policies; the reasons, if any."""
    why = reasons(load_policies(session), facts_of(session, items))
    export.approval = ApprovalState.PENDING if why else ApprovalState.NOT_REQUIRED
    export.approval_reason = "; ".join(why) or None
    return why


def _export_cameras(session: Session, export: Export) -> Sequence[Camera]:
    return session.scalars(select(Camera).join(ExportItem, ExportItem.camera_id == Camera.id)
                           .where(ExportItem.export_id == export.id)
                           .order_by(Camera.id)).all()


def covers_export(*, session: Session, principal: Principal, export: Export) -> bool:
    """Every camera of the export lies in the principal's scope."""
    reach = scope.scope_of(session, principal)
    return all(reach.covers_camera(camera_id=c.id,
                                   region_path=scope.region_path_of(session, c.region_id))
               for c in _export_cameras(session, export))


def decide(*, session: Session, export: Export, case: Case, principal: Principal,
           approve: bool, note: str) -> Export:
    """An approver's decision on a pending export; custody and audit events."""
    note = note.strip()
    if not note or len(note) > MAX_NOTE_CHARS or "\x00" in note:
        raise InvalidInput(f"a decision needs a note of 1 to {MAX_NOTE_CHARS} characters")
    if RoleName(principal.role) != RoleName.ADMIN:
        raise Forbidden("exports are approved by admins")
    if not covers_export(session=session, principal=principal, export=export):
        raise scope.OutOfScope(f"export {export.id} does not exist", principal=principal,
                               target_type="export", target_id=str(export.id))
    session.refresh(export, with_for_update=True)
    if export.approval != ApprovalState.PENDING:
        raise Conflict(f"export {export.id} is not awaiting approval "
                       f"({export.approval.value})")
    if export.requested_by == principal.id:
        raise Forbidden("an export is approved by someone other than its requester")
    export.approval = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
    export.decided_by = principal.id
    export.decided_at = datetime.now(UTC)
    export.decision_note = note
    session.flush()
    action = "export_approved" if approve else "export_rejected"
    cases.append_custody(session=session, case=case, action=action, principal=principal,
                         export_id=export.id, detail={"note": note})
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action=f"export.{'approve' if approve else 'reject'}", target_type="export",
                 target_id=str(export.id), detail={"case": case.reference, "note": note})
    return export


def check_released(export: Export) -> None:
    """Downloads of a package wait for its approval (409 otherwise)."""
    if export.approval == ApprovalState.PENDING:
        raise Conflict(f"export {export.id} awaits a second person's approval "
                       f"({export.approval_reason})")
    if export.approval == ApprovalState.REJECTED:
        raise Conflict(f"export {export.id} was rejected by its approver: its package is "
                       "not released")


def pending(*, session: Session, principal: Principal) -> list[tuple[Export, Case]]:
    """Exports awaiting approval that ``principal`` could decide on."""
    rows = session.execute(select(Export, Case).join(Case, Case.id == Export.case_id)
                           .where(Export.approval == ApprovalState.PENDING)
                           .order_by(Export.created_at)).all()
    return [(e, c) for e, c in rows
            if covers_export(session=session, principal=principal, export=e)
            and cases.may_see(session=session, case=c, principal=principal)]

