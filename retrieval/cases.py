"""Cases, their members, and their chain-of-custody record.

Every action on a case is a custody event (``vigil/custody.py``) appended in the same
transaction as the action itself, so that the record and the state never disagree.
Appends to one case are serialised by a row lock on the case, so each case's chain
has exactly one head. Actions are audited as well (the system-wide trail).

Who sees what: admins and auditors see the cases of their scope (a case belongs to
the region of the person who opened it; vigil/auth/scope.py); an investigator sees
and acts on the cases of their scope they are a member of; a principal bound to a
camera set sees only cases it is a member of. The creator of a case is its first
member.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from vigil import audit, custody
from vigil.auth import scope
from vigil.catalog.models import (
    Camera,
    Case,
    CaseMember,
    CaseStatus,
    Export,
    ExportItem,
    Hold,
    Principal,
    RoleName,
)
from vigil.catalog.models import CustodyEvent as CustodyRow
from vigil.chunks import to_us
from vigil.errors import Conflict, Forbidden, InvalidInput, NotFound

MAX_TITLE_CHARS: Final = 300
MAX_REFERENCE_CHARS: Final = 64
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_REFERENCE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REFERENCE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


def _actor(principal: Principal | None) -> tuple[str, int | None]:
    return ("system", None) if principal is None else (principal.name, principal.id)


def append_custody(*, session: Session, case: Case, action: str,
                   principal: Principal | None, export_id: uuid.UUID | None = None,
                   detail: Mapping[str, Any] | None = None) -> CustodyRow:
    """Append one custody event to ``case``'s chain (flushes; the caller commits)."""
    session.execute(select(Case.id).where(Case.id == case.id).with_for_update())
    head = session.execute(
        select(CustodyRow.seq, CustodyRow.event_hash).where(CustodyRow.case_id == case.id)
        .order_by(CustodyRow.seq.desc()).limit(1)).first()
    seq, prev_hash = (1, custody.GENESIS) if head is None else (head.seq + 1, head.event_hash)
    actor, principal_id = _actor(principal)
    # Microseconds, as timestamptz stores them, so that the hash re-computes.
    now = datetime.now(UTC)
    event = custody.CustodyEvent(
        case=case.reference, seq=seq, at_us=to_us(now), actor=actor, action=action,
        export_id=None if export_id is None else str(export_id),
        detail=custody.json_ready(detail or {}), prev_hash=prev_hash)
    row = CustodyRow(case_id=case.id, seq=seq, occurred_at=now, principal_id=principal_id,
                     actor=actor, action=action, export_id=export_id,
                     detail=dict(event.detail), prev_hash=prev_hash,
                     event_hash=event.digest())
    session.add(row)
    session.flush()
    return row


def event_of(case: Case, row: CustodyRow) -> custody.CustodyEvent:
    return custody.CustodyEvent(
        case=case.reference, seq=row.seq, at_us=to_us(row.occurred_at), actor=row.actor,
        action=row.action, export_id=None if row.export_id is None else str(row.export_id),
        detail=row.detail, prev_hash=row.prev_hash)


def at_of(event: custody.CustodyEvent) -> datetime:
    return _EPOCH + timedelta(microseconds=event.at_us)


def custody_log(*, session: Session, case: Case, through_seq: int | None = None
                ) -> list[tuple[custody.CustodyEvent, bytes]]:
    """The case's events in order (up to ``through_seq``), each with its recorded hash."""
    stmt = select(CustodyRow).where(CustodyRow.case_id == case.id).order_by(CustodyRow.seq)
    if through_seq is not None:
        stmt = stmt.where(CustodyRow.seq <= through_seq)
    return [(event_of(case, row), row.event_hash) for row in session.scalars(stmt)]


REDACTED: Final = {"redacted": "this event concerns cameras outside your scope"}


def visible_details(*, session: Session, case: Case, principal: Principal,
                    log: Sequence[tuple[custody.CustodyEvent, bytes]]) -> list[dict[str, Any]]:
    """Each event's detail as ``principal`` may read it: events about cameras outside
    its scope (holds, exports and their items) are redacted to ``REDACTED``. The
    events, their hashes and the chain's verification are unchanged."""
    visible = scope.visible_camera_ids(session, principal)
    if visible is None:
        return [dict(e.detail) for e, _ in log]
    hidden_exports = {str(export_id) for export_id, camera_id in session.execute(
        select(ExportItem.export_id, ExportItem.camera_id).join(
            Export, Export.id == ExportItem.export_id).where(Export.case_id == case.id))
        if camera_id not in visible}
    hidden_holds = set(session.scalars(select(Hold.id).where(
        Hold.case_id == case.id, Hold.camera_id.not_in(visible))))
    names = set(session.scalars(select(Camera.name).where(Camera.id.in_(visible))))

    def hidden(event: custody.CustodyEvent) -> bool:
        detail = event.detail
        cameras = [detail.get("camera")] + [i.get("camera") for i in detail.get("items", [])
                                            if isinstance(i, dict)]
        return (event.export_id in hidden_exports or detail.get("hold") in hidden_holds
                or any(c is not None and c not in names for c in cameras))
    return [dict(REDACTED) if hidden(e) else dict(e.detail) for e, _ in log]


# --- cases -----------------------------------------------------------------------------


def _new_reference(now: datetime) -> str:
    tail = "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(5))
    return f"C-{now:%Y%m%d}-{tail}"


def create_case(*, session: Session, title: str, principal: Principal,
                reference: str | None = None, description: str = "") -> Case:
    title = title.strip()
    if not title or len(title) > MAX_TITLE_CHARS or not title.isprintable():
        raise InvalidInput(f"a case needs a title of 1 to {MAX_TITLE_CHARS} printable "
                           "characters")
    if "\x00" in description:
        raise InvalidInput("a case description may not contain NUL characters")
    now = datetime.now(UTC)
    reference = (reference or _new_reference(now)).strip()
    # Letters, digits, '.', '_' and '-': a reference goes into URLs and file names.
    if len(reference) > MAX_REFERENCE_CHARS or not _REFERENCE.fullmatch(reference):
        raise InvalidInput(f"a case reference is 1 to {MAX_REFERENCE_CHARS} letters, digits, "
                           "'.', '_' or '-', starting with a letter or digit")
    if session.scalars(select(Case.id).where(Case.reference == reference)).first():
        raise Conflict(f"case {reference!r} already exists")
    case = Case(reference=reference, title=title, description=description,
                region_id=principal.region_id, created_by=principal.id)
    try:
        with session.begin_nested():  # a concurrent create of the same reference
            session.add(case)
            session.flush()
    except DBIntegrityError:
        raise Conflict(f"case {reference!r} already exists") from None
    session.add(CaseMember(case_id=case.id, principal_id=principal.id, added_by=principal.id))
    append_custody(session=session, case=case, action="case_opened", principal=principal,
                   detail={"title": title, "description": description})
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action="case.create", target_type="case", target_id=reference,
                 detail={"title": title})
    return case


def is_member(*, session: Session, case: Case, principal: Principal) -> bool:
    return session.get(CaseMember, (case.id, principal.id)) is not None


def may_see(*, session: Session, case: Case, principal: Principal) -> bool:
    """Admins and auditors see the cases of their scope; investigators the cases of
    their scope they are members of (vigil/auth/scope.py)."""
    member = is_member(session=session, case=case, principal=principal)
    role = RoleName(principal.role)
    if role not in (RoleName.ADMIN, RoleName.AUDITOR) and not member:
        return False
    return scope.scope_of(session, principal).covers_case(
        region_path=scope.region_path_of(session, case.region_id), member=member)


def get_case(*, session: Session, reference: str, principal: Principal) -> Case:
    """The case, if ``principal`` may see it; NotFound otherwise (never 'exists but
    forbidden': case references are not to be probed). A case that exists but is not
    the principal's to see is ``OutOfScope``: the same answer, audited."""
    case = session.scalars(select(Case).where(Case.reference == reference)).one_or_none()
    if case is None:
        raise NotFound(f"case {reference!r} does not exist")
    if not may_see(session=session, case=case, principal=principal):
        raise scope.OutOfScope(f"case {reference!r} does not exist", principal=principal,
                               target_type="case", target_id=reference)
    return case


def acting_case(*, session: Session, reference: str, principal: Principal) -> Case:
    """The case, if ``principal`` may act on it (admin, or investigator member) and it
    is open."""
    case = get_case(session=session, reference=reference, principal=principal)
    # Locked, so that a concurrent close cannot slip between this check and the action.
    session.refresh(case, with_for_update=True)
    role = RoleName(principal.role)
    if role == RoleName.AUDITOR or (role != RoleName.ADMIN and not is_member(
            session=session, case=case, principal=principal)):
        raise Forbidden(f"{principal.name} may not act on case {reference!r}")
    if case.status != CaseStatus.OPEN:
        raise Conflict(f"case {reference!r} is closed")
    return case


def list_cases(*, session: Session, principal: Principal) -> Sequence[Case]:
    """The cases ``principal`` may see (``may_see``), newest first."""
    reach = scope.scope_of(session, principal)
    stmt = (select(Case).where(reach.region_clause(Case.region_id))
            .order_by(Case.created_at.desc(), Case.id.desc()))
    if (RoleName(principal.role) not in (RoleName.ADMIN, RoleName.AUDITOR)
            or reach.camera_ids is not None):
        stmt = stmt.join(CaseMember, CaseMember.case_id == Case.id).where(
            CaseMember.principal_id == principal.id)
    return session.scalars(stmt).all()


def close_case(*, session: Session, reference: str, principal: Principal, reason: str) -> Case:
    reason = reason.strip()
    if not reason or "\x00" in reason:
        raise InvalidInput("closing a case needs a reason (without NUL characters)")
    case = acting_case(session=session, reference=reference, principal=principal)
    from retention import service as retention_service  # retention imports cases

    case.status = CaseStatus.CLOSED
    case.closed_at = datetime.now(UTC)
    # The holds its exports placed go with it (manual holds stay until an admin
    # releases them).
    released = retention_service.release_export_holds(session=session, case=case)
    append_custody(session=session, case=case, action="case_closed", principal=principal,
                   detail={"reason": reason, "holds_released": len(released)})
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action="case.close", target_type="case", target_id=reference,
                 detail={"reason": reason})
    return case


def add_member(*, session: Session, reference: str, principal: Principal,
               member_name: str) -> Principal:
    case = acting_case(session=session, reference=reference, principal=principal)
    member = session.scalars(select(Principal).where(Principal.name == member_name)
                             ).one_or_none()
    if member is None or member.disabled_at is not None:
        raise NotFound(f"principal {member_name!r} does not exist")
    if RoleName(member.role) not in (RoleName.INVESTIGATOR, RoleName.ADMIN):
        raise InvalidInput(f"{member_name!r} has role {member.role!r}; case members are "
                           "investigators or admins")
    if is_member(session=session, case=case, principal=member):
        raise Conflict(f"{member_name!r} is already a member of case {reference!r}")
    if not scope.scope_of(session, member).covers_case(
            region_path=scope.region_path_of(session, case.region_id), member=True):
        raise InvalidInput(f"case {reference!r} lies outside {member_name!r}'s region; "
                           "members must be able to see the case")
    session.add(CaseMember(case_id=case.id, principal_id=member.id, added_by=principal.id))
    append_custody(session=session, case=case, action="member_added", principal=principal,
                   detail={"member": member.name, "role": member.role})
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action="case.add_member", target_type="case", target_id=reference,
                 detail={"member": member.name})
    return member


def members(*, session: Session, case: Case) -> list[str]:
    return list(session.scalars(
        select(Principal.name).join(CaseMember, CaseMember.principal_id == Principal.id)
        .where(CaseMember.case_id == case.id).order_by(Principal.name)))
