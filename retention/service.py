"""Retention rules, their preview, and evidence holds (docs/design/storage.md).

Service functions take the session and flush; the caller commits. Object-store work
(legal holds) happens after the commit, in ``retention.worm``.

Which chunks are expired is one SQL predicate (``EXPIRED``), shared by the preview
and the sweeper, so that the preview shows what the next sweep deletes. Ages are
measured on PostgreSQL's clock (``now()``), never a worker's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from recorder.service import get_camera
from retention.policy import Rule, RuleSet, check_keep_days, governing
from retrieval import cases
from vigil import audit
from vigil.auth import scope as reach
from vigil.catalog.models import Camera, Case, CaseStatus, Hold, Principal, Region, RetentionRule
from vigil.errors import Conflict, InvalidInput, NotFound

# The lock that hold placement and the sweeper's tombstoning both take per camera
# (pg_advisory_xact_lock(namespace, camera id)): a hold placed concurrently with a
# sweep either is seen by the sweep's re-check or waits for its commit.
CAMERA_LOCK_NAMESPACE: Final = 0x56_47_52_54  # "VGRT"
MAX_REASON_CHARS: Final = 2000

# A hold keeps what it overlaps while it is unreleased, and after its release until
# the S3 legal holds it placed are lifted (so that the sweeper never runs into them).
_HOLDS: Final = """(SELECT 1 FROM holds h
     WHERE h.camera_id = c.camera_id
       AND (h.released_at IS NULL OR (h.locked_at IS NOT NULL AND h.unlocked_at IS NULL))
       AND h.start_at < c.end_at AND h.end_at > c.start_at)"""
_AGED: Final = """
    c.camera_id = :camera_id
    AND c.start_at < now() - make_interval(days => :keep_days)
    AND c.end_at < now() - make_interval(days => :keep_days)"""
# A chunk is expired under a rule of :keep_days days when it ended that long ago and
# no hold keeps it. Parameters: :camera_id, :keep_days.
EXPIRED: Final = _AGED + " AND NOT EXISTS " + _HOLDS
# Expired by age, kept by a hold.
HELD: Final = _AGED + " AND EXISTS " + _HOLDS


def lock_camera(session: Session, camera_id: int) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(:ns, :id)"),
                    {"ns": CAMERA_LOCK_NAMESPACE, "id": camera_id})


# --- rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Where a rule applies: a camera (by name), a region (by code), or the default."""

    camera: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if self.camera is not None and self.region is not None:
            raise InvalidInput("a rule is for a camera or for a region, not both")


def _resolve(session: Session, scope: Scope,
             principal: Principal) -> tuple[int | None, int | None, str]:
    """The rule's target, which must lie in the principal's reach (the default rule is
    system-wide)."""
    if scope.camera is not None:
        camera = session.scalars(select(Camera).where(Camera.name == scope.camera)).first()
        if camera is None:
            raise NotFound(f"camera {scope.camera!r} does not exist")
        reach.check_camera(session, principal, camera)
        return camera.id, None, f"camera {camera.name}"
    if scope.region is not None:
        region = session.scalars(select(Region).where(Region.code == scope.region)).first()
        if region is None:
            raise NotFound(f"region {scope.region!r} does not exist")
        reach.check_region(session, principal, region, scope.region)
        reach.require_region_authority(session, principal, "retention rules")
        return None, region.id, f"region {region.code}"
    reach.require_whole(session, principal, "the default retention rule")
    return None, None, "default"


def _rule_row(session: Session, camera_id: int | None,
              region_id: int | None) -> RetentionRule | None:
    return session.scalars(select(RetentionRule).where(
        RetentionRule.camera_id.is_(None) if camera_id is None
        else RetentionRule.camera_id == camera_id,
        RetentionRule.region_id.is_(None) if region_id is None
        else RetentionRule.region_id == region_id)).first()


def set_rule(*, session: Session, scope: Scope, keep_days: int, floor_days: int,
             principal: Principal) -> RetentionRule:
    """Create or change the rule of ``scope``; audited."""
    check_keep_days(keep_days, floor_days=floor_days)
    camera_id, region_id, label = _resolve(session, scope, principal)
    row = _rule_row(session, camera_id, region_id)
    before = None if row is None else row.keep_days
    if row is None:
        row = RetentionRule(camera_id=camera_id, region_id=region_id, keep_days=keep_days,
                            created_by=principal.id)
        session.add(row)
    else:
        row.keep_days = keep_days
        row.updated_at = text("now()")  # type: ignore[assignment]
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action="retention.rule_set", target_type="retention_rule", target_id=label,
                 detail={"keep_days": keep_days, "before": before})
    session.flush()
    return row


def remove_rule(*, session: Session, scope: Scope, principal: Principal) -> None:
    camera_id, region_id, label = _resolve(session, scope, principal)
    row = _rule_row(session, camera_id, region_id)
    if row is None:
        raise NotFound(f"there is no retention rule for {label}")
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action="retention.rule_removed", target_type="retention_rule",
                 target_id=label, detail={"keep_days": row.keep_days})
    session.delete(row)
    session.flush()


@dataclass(frozen=True)
class RuleView:
    scope: str
    keep_days: int
    updated_at: datetime


def list_rules(*, session: Session, principal: Principal | None = None) -> list[RuleView]:
    """Every rule; with ``principal``, those that can govern its cameras: the default,
    the rules of regions above and within its subtree, and of its cameras."""
    rows = session.execute(text("""
        SELECT r.keep_days, r.updated_at, c.name AS camera, r.camera_id, g.code AS region,
               g.path
          FROM retention_rules r
          LEFT JOIN cameras c ON c.id = r.camera_id
          LEFT JOIN regions g ON g.id = r.region_id
         ORDER BY (r.camera_id IS NULL AND r.region_id IS NULL) DESC, g.code, c.name""")).all()
    visible = None if principal is None else reach.visible_camera_ids(session, principal)
    area = None if principal is None else reach.scope_of(session, principal).region_path

    def shown(r: Any) -> bool:
        if r.camera_id is not None:
            return visible is None or r.camera_id in visible
        if r.path is not None and area is not None:
            return r.path.startswith(area) or area.startswith(r.path)
        return True
    return [RuleView(scope=f"camera {r.camera}" if r.camera else
                     f"region {r.region}" if r.region else "default",
                     keep_days=r.keep_days, updated_at=r.updated_at)
            for r in rows if shown(r)]


def load_rules(session: Session) -> RuleSet:
    by_camera: dict[int, Rule] = {}
    by_region: dict[int, Rule] = {}
    default = None
    for keep_days, camera, camera_id, region, region_id in session.execute(text("""
            SELECT r.keep_days, c.name, r.camera_id, g.code, r.region_id
              FROM retention_rules r
              LEFT JOIN cameras c ON c.id = r.camera_id
              LEFT JOIN regions g ON g.id = r.region_id""")).all():
        if camera_id is not None:
            by_camera[camera_id] = Rule(keep_days, f"camera {camera}")
        elif region_id is not None:
            by_region[region_id] = Rule(keep_days, f"region {region}")
        else:
            default = Rule(keep_days, "default")
    return RuleSet(by_camera=by_camera, by_region=by_region, default=default)


@dataclass(frozen=True)
class Governed:
    camera_id: int
    camera: str
    rule: Rule | None


def governed_cameras(session: Session, *, camera: str | None = None,
                     camera_ids: frozenset[int] | None = None) -> list[Governed]:
    """Every camera (or one, or those of ``camera_ids``) with the rule that governs it."""
    rules = load_rules(session)
    query = """SELECT c.id, c.name, g.path FROM cameras c
                 LEFT JOIN regions g ON g.id = c.region_id"""
    params: dict[str, object] = {}
    if camera is not None:
        query += " WHERE c.name = :name"
        params["name"] = camera
    query += " ORDER BY c.name"
    rows = session.execute(text(query), params).all()
    if camera is not None and not rows:
        raise NotFound(f"camera {camera!r} does not exist")
    return [Governed(camera_id=r.id, camera=r.name,
                     rule=governing(rules, camera_id=r.id, region_path=r.path))
            for r in rows if camera_ids is None or r.id in camera_ids]


# --- preview -------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewRow:
    camera: str
    rule: str | None  # None: no rule reaches the camera; nothing is deleted
    keep_days: int | None
    chunks: int  # what the next sweep deletes
    stored_bytes: int
    start_at: datetime | None  # of the first of them
    end_at: datetime | None  # of the last
    held_chunks: int  # expired by age, kept by a hold


def preview(*, session: Session, camera: str | None = None, floor_days: int = 0,
            principal: Principal | None = None) -> list[PreviewRow]:
    """Per camera (of ``principal``'s scope, if given), what the next sweep deletes (and
    what holds keep), with the rule's days raised to the floor as the sweep raises
    them."""
    visible = None
    if principal is not None:
        if camera is not None:
            get_camera(session=session, name=camera, principal=principal)
        visible = reach.visible_camera_ids(session, principal)
    out: list[PreviewRow] = []
    for g in governed_cameras(session, camera=camera, camera_ids=visible):
        if g.rule is None:
            out.append(PreviewRow(camera=g.camera, rule=None, keep_days=None, chunks=0,
                                  stored_bytes=0, start_at=None, end_at=None, held_chunks=0))
            continue
        params = {"camera_id": g.camera_id, "keep_days": max(g.rule.keep_days, floor_days)}
        # Module constants only are spliced in; values are bound.
        expired = session.execute(text(f"""
            SELECT count(*) AS n, coalesce(sum(c.stored_bytes), 0) AS bytes,
                   min(c.start_at) AS first, max(c.end_at) AS last
              FROM chunks c WHERE {EXPIRED}"""), params).one()  # noqa: S608
        held = session.execute(text(f"SELECT count(*) FROM chunks c WHERE {HELD}"),  # noqa: S608
                               params).scalar_one()
        out.append(PreviewRow(camera=g.camera, rule=g.rule.scope, keep_days=g.rule.keep_days,
                              chunks=expired.n, stored_bytes=int(expired.bytes),
                              start_at=expired.first, end_at=expired.last, held_chunks=held))
    return out


# --- holds ---------------------------------------------------------------------------


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON_CHARS or "\x00" in reason:
        raise InvalidInput(f"a hold needs a reason of 1 to {MAX_REASON_CHARS} characters")
    return reason


def place_hold(*, session: Session, case: Case, camera: Camera, start_at: datetime,
               end_at: datetime, reason: str, principal: Principal | None,
               export_id: uuid.UUID | None = None) -> Hold:
    """Hold ``[start_at, end_at)`` of ``camera`` for ``case``; audited. Takes the
    camera's retention lock, so that a sweep running now either sees the hold or has
    committed its deletions before the hold exists."""
    reason = _reason(reason)
    if start_at.tzinfo is None or end_at.tzinfo is None:
        raise InvalidInput("hold times need a UTC offset")
    if not start_at < end_at:
        raise InvalidInput("a hold must end after it starts")
    if case.status != CaseStatus.OPEN:
        raise Conflict(f"case {case.reference!r} is closed: it cannot hold footage")
    lock_camera(session, camera.id)
    created_by = principal.id if principal is not None else _requester(session, export_id)
    hold = Hold(case_id=case.id, camera_id=camera.id, start_at=start_at, end_at=end_at,
                reason=reason, created_by=created_by, export_id=export_id)
    session.add(hold)
    session.flush()
    audit.record(session=session, actor=principal.name if principal else "system",
                 principal_id=principal.id if principal else None, action="hold.placed",
                 target_type="hold", target_id=str(hold.id),
                 detail={"case": case.reference, "camera": camera.name,
                         "start_at": start_at.isoformat(), "end_at": end_at.isoformat(),
                         "reason": reason, "export": str(export_id) if export_id else None})
    if export_id is None:  # an export's own hold is told by its export_requested event
        cases.append_custody(session=session, case=case, action="hold_placed",
                             principal=principal,
                             detail={"hold": hold.id, "camera": camera.name, "reason": reason,
                                     "start_at": start_at.isoformat(),
                                     "end_at": end_at.isoformat()})
    return hold


def _requester(session: Session, export_id: uuid.UUID | None) -> int:
    from vigil.catalog.models import Export

    export = session.get(Export, export_id) if export_id is not None else None
    if export is None:
        raise InvalidInput("a hold is placed by someone, or for an export")
    return export.requested_by


def release_hold(*, session: Session, hold_id: int, reason: str,
                 principal: Principal | None) -> Hold:
    """Release a hold (an admin's act, or the system's when the case of an export's
    hold closes); audited. The footage falls back under its retention rule."""
    reason = _reason(reason)
    hold = session.get(Hold, hold_id, with_for_update=True)
    if hold is None:
        raise NotFound(f"hold {hold_id} does not exist")
    if principal is not None and not _may_see_hold(session, hold, principal):
        raise reach.OutOfScope(f"hold {hold_id} does not exist", principal=principal,
                               target_type="hold", target_id=str(hold_id))
    if hold.released_at is not None:
        raise Conflict(f"hold {hold_id} was already released at {hold.released_at}")
    hold.released_at = text("now()")  # type: ignore[assignment]
    hold.released_by = principal.id if principal is not None else hold.created_by
    hold.release_reason = reason
    session.flush()
    session.refresh(hold)
    case = session.get(Case, hold.case_id)
    camera = session.get(Camera, hold.camera_id)
    assert case is not None and camera is not None  # FKs
    audit.record(session=session, actor=principal.name if principal else "system",
                 principal_id=principal.id if principal else None, action="hold.released",
                 target_type="hold", target_id=str(hold.id),
                 detail={"case": case.reference, "camera": camera.name, "reason": reason})
    if principal is not None:  # the system's releases are told by case_closed
        cases.append_custody(session=session, case=case, action="hold_released",
                             principal=principal, detail={"hold": hold.id, "reason": reason})
    return hold


def _may_see_hold(session: Session, hold: Hold, principal: Principal) -> bool:
    """A hold is seen by who sees both its camera and its case."""
    visible = reach.visible_camera_ids(session, principal)
    if visible is not None and hold.camera_id not in visible:
        return False
    case = session.get(Case, hold.case_id)
    assert case is not None  # FK
    return cases.may_see(session=session, case=case, principal=principal)


def release_export_holds(*, session: Session, case: Case) -> list[Hold]:
    """When a case closes, the holds its exports placed are released."""
    held = session.scalars(select(Hold).where(Hold.case_id == case.id,
                                              Hold.export_id.is_not(None),
                                              Hold.released_at.is_(None))).all()
    return [release_hold(session=session, hold_id=h.id, principal=None,
                         reason=f"case {case.reference} closed") for h in held]


@dataclass(frozen=True)
class HoldView:
    id: int
    case: str
    camera: str
    start_at: datetime
    end_at: datetime
    reason: str
    export_id: uuid.UUID | None
    created_at: datetime
    released_at: datetime | None
    release_reason: str | None


def list_holds(*, session: Session, case: str | None = None, camera: str | None = None,
               include_released: bool = False, hold_id: int | None = None,
               principal: Principal | None = None) -> list[HoldView]:
    """Holds, filtered; with ``principal``, only those it may see: its scope holds
    their camera and it may see their case (``cases.may_see``: an investigator, the
    cases it is a member of)."""
    camera_ids = None if principal is None else reach.visible_camera_ids(session, principal)
    query = """SELECT h.id, k.reference AS case, c.name AS camera, h.start_at, h.end_at,
                      h.reason, h.export_id, h.created_at, h.released_at, h.release_reason
                 FROM holds h JOIN cases k ON k.id = h.case_id
                 JOIN cameras c ON c.id = h.camera_id WHERE true"""
    params: dict[str, object] = {}
    if case is not None:
        query += " AND k.reference = :case"
        params["case"] = case
    if camera is not None:
        query += " AND c.name = :camera"
        params["camera"] = camera
    if hold_id is not None:
        query += " AND h.id = :hold"
        params["hold"] = hold_id
    if not include_released:
        query += " AND h.released_at IS NULL"
    if camera_ids is not None:
        query += " AND h.camera_id = ANY(:cameras)"
        params["cameras"] = sorted(camera_ids)
    rows = session.execute(text(query + " ORDER BY h.id"), params).all()
    if principal is not None and rows:
        seen = {c.reference: cases.may_see(session=session, case=c, principal=principal)
                for c in session.scalars(select(Case).where(
                    Case.reference.in_({r.case for r in rows})))}
        rows = [r for r in rows if seen[r.case]]
    return [HoldView(**r._asdict()) for r in rows]


def holds_chunks(session: Session, hold: Hold) -> Sequence[str]:
    """Object keys of the chunks a hold covers now."""
    return session.scalars(text("""
        SELECT object_key FROM chunks
         WHERE camera_id = :camera AND start_at < :end AND end_at > :start
         ORDER BY seq"""), {"camera": hold.camera_id, "start": hold.start_at,
                            "end": hold.end_at}).all()
